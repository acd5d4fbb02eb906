// Prompt text -> text-encoder hidden states the way A1111 builds them: attention syntax,
// 75-token chunks with comma backtrack, one encoder batch for all chunks, clip skip, then
// emphasis with mean restoration and the chunks joined along the sequence axis.
import type { Session } from '../runtime/session.ts';
import { Tensor } from '../tensor/tensor.ts';
import { type ChunkOptions, type EncodedPrompt, emphasizeChunks, promptChunks } from '../text/conditioning.ts';
import { CONTEXT_LENGTH, type ClipTokenizer } from '../text/tokenizer.ts';
import { RedlineError } from '../errors.ts';

export class PromptEncoder {
  private readonly cache = new Map<string, EncodedPrompt>();

  constructor(
    private readonly tokenizer: ClipTokenizer,
    private readonly session: Session,
    /** Hidden width of the text encoder (768 for SD 1.5). */
    readonly width: number,
    /** Largest clip skip the encoder graph exposes. */
    readonly maxClipSkip: number,
  ) {}

  /** Encodes one prompt (LoRA tags already removed). Results are cached per prompt and
   * clip skip: the negative prompt rarely changes between generations. */
  async encode(prompt: string, clipSkip = 1, options: ChunkOptions = {}): Promise<EncodedPrompt> {
    if (!Number.isInteger(clipSkip) || clipSkip < 1 || clipSkip > this.maxClipSkip) {
      throw new RedlineError('bad_option', `Clip skip must be an integer from 1 to ${this.maxClipSkip}, got ${clipSkip}.`);
    }
    const key = `${clipSkip}\u0000${options.emphasis ?? ''}\u0000${options.commaBacktrack ?? ''}\u0000${prompt}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    const chunks = promptChunks(this.tokenizer, prompt, options);
    const ids = new BigInt64Array(chunks.ids.length);
    for (let i = 0; i < ids.length; i++) ids[i] = BigInt(chunks.ids[i]!);
    const output = clipSkip === 1 ? 'last_hidden_state' : `clip_skip_${clipSkip}`;
    const result = await this.session.run({ input_ids: new Tensor('i64', [chunks.chunks, CONTEXT_LENGTH], ids) }, [output]);
    const hidden = result[output]!.toFloat32();
    const encoded: EncodedPrompt = {
      states: emphasizeChunks(hidden, chunks, this.width, options.emphasis ?? 'Original'),
      tokens: chunks.chunks * CONTEXT_LENGTH,
    };
    if (this.cache.size > 64) this.cache.clear();
    this.cache.set(key, encoded);
    return encoded;
  }

  /** Invalidates cached encodings (after the text encoder's adapters change). */
  clear(): void {
    this.cache.clear();
  }
}
