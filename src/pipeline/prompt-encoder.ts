// Prompt text -> text-encoder hidden states the way A1111 builds them: attention syntax,
// 75-token chunks with comma backtrack, one encoder batch for all chunks, clip skip, then
// emphasis with mean restoration and the chunks joined along the sequence axis.
import type { Session } from '../runtime/session.ts';
import { Tensor } from '../tensor/tensor.ts';
import { batchPromptChunks, type ChunkOptions, type EncodedPrompt, emphasizeBatch, emphasizeChunks, promptChunks } from '../text/conditioning.ts';
import { CONTEXT_LENGTH, type ClipTokenizer } from '../text/tokenizer.ts';
import { RedlineError } from '../errors.ts';

/** Raw encoder rows kept between generations: 256 rows are 60 MB at SD 1.5's width. */
const ROW_CACHE_LIMIT = 256;

export class PromptEncoder {
  private readonly cache = new Map<string, EncodedPrompt>();
  /** Text-encoder output of one 77-token row (before emphasis), by clip skip and token ids. */
  private readonly rows = new Map<string, Float32Array>();

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

  /**
   * Encodes the texts of one prompt schedule together, as A1111's get_learned_conditioning
   * does for the schedule variants of a prompt: every text gets the largest chunk count
   * (shorter ones filled with empty chunks) and emphasis restores each chunk index to the
   * mean over the whole list, duplicates included. The encoder itself runs once per
   * distinct 77-token row not already cached (its output for a row does not depend on the
   * other rows); equal texts get the same EncodedPrompt object.
   */
  async encodeSchedule(texts: readonly string[], clipSkip = 1, options: ChunkOptions = {}): Promise<EncodedPrompt[]> {
    this.checkClipSkip(clipSkip);
    const batch = batchPromptChunks(this.tokenizer, texts, options);
    const rowKeys: string[] = [];
    const missing = new Map<string, number>();
    for (let r = 0; r < batch.chunks * batch.batch; r++) {
      const key = `${clipSkip}\u0000${batch.ids.subarray(r * CONTEXT_LENGTH, (r + 1) * CONTEXT_LENGTH).join(',')}`;
      rowKeys.push(key);
      if (!this.rows.has(key) && !missing.has(key)) missing.set(key, r);
    }
    const rowSize = CONTEXT_LENGTH * this.width;
    const found = new Map<string, Float32Array>();
    for (const key of rowKeys) {
      const hit = this.rows.get(key);
      if (hit) found.set(key, hit);
    }
    if (missing.size > 0) {
      const starts = [...missing.values()];
      const ids = new BigInt64Array(starts.length * CONTEXT_LENGTH);
      starts.forEach((r, i) => {
        for (let k = 0; k < CONTEXT_LENGTH; k++) ids[i * CONTEXT_LENGTH + k] = BigInt(batch.ids[r * CONTEXT_LENGTH + k]!);
      });
      const hidden = await this.runEncoder(ids, starts.length, clipSkip);
      if (this.rows.size + missing.size > ROW_CACHE_LIMIT) this.rows.clear();
      [...missing.keys()].forEach((key, i) => {
        const row = hidden.slice(i * rowSize, (i + 1) * rowSize);
        found.set(key, row);
        this.rows.set(key, row);
      });
    }
    const states = new Float32Array(rowKeys.length * rowSize);
    rowKeys.forEach((key, r) => states.set(found.get(key)!, r * rowSize));
    const emphasized = emphasizeBatch(states, batch, this.width, options.emphasis ?? 'Original');
    const byText = new Map<string, EncodedPrompt>();
    const tokens = batch.chunks * CONTEXT_LENGTH;
    return texts.map((text, i) => {
      let e = byText.get(text);
      if (!e) {
        e = { states: emphasized[i]!, tokens };
        byText.set(text, e);
      }
      return e;
    });
  }

  private checkClipSkip(clipSkip: number): void {
    if (!Number.isInteger(clipSkip) || clipSkip < 1 || clipSkip > this.maxClipSkip) {
      throw new RedlineError('bad_option', `Clip skip must be an integer from 1 to ${this.maxClipSkip}, got ${clipSkip}.`);
    }
  }

  private async runEncoder(ids: BigInt64Array, rows: number, clipSkip: number): Promise<Float32Array> {
    const output = clipSkip === 1 ? 'last_hidden_state' : `clip_skip_${clipSkip}`;
    const result = await this.session.run({ input_ids: new Tensor('i64', [rows, CONTEXT_LENGTH], ids) }, [output]);
    return result[output]!.toFloat32();
  }

  /** Invalidates cached encodings (after the text encoder's adapters change). */
  clear(): void {
    this.cache.clear();
    this.rows.clear();
  }
}
