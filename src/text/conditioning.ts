// A1111's prompt -> text-encoder input (modules/sd_hijack_clip.py tokenize_line/forward)
// and emphasis on the encoder output (modules/sd_emphasis.py), as pure functions:
// the pipeline runs the text encoder between `promptChunks` and `emphasizeChunks`.
import { RedlineError } from '../errors.ts';
import { BREAK_WEIGHT, parsePromptAttention, type WeightedText } from './prompt-parser.ts';
import { BOS_ID, CONTEXT_LENGTH, EOS_ID, type ClipTokenizer } from './tokenizer.ts';

/** Prompt tokens per chunk; each chunk is encoded as BOS + 75 + EOS = 77 positions. */
export const CHUNK_LENGTH = 75;
/** A1111's default "Prompt word wrap length limit" (opts.comma_padding_backtrack). */
export const DEFAULT_COMMA_BACKTRACK = 20;

/**
 * A1111's opts.emphasis: 'Original' (multiply, then restore the mean; the default),
 * 'No norm' (multiply only), 'Ignore' (parse, but apply nothing), 'None' (no parsing:
 * brackets and BREAK are plain text).
 */
export type EmphasisMode = 'Original' | 'No norm' | 'Ignore' | 'None';

export interface ChunkOptions {
  emphasis?: EmphasisMode;
  /** Move the text after the last comma to the next chunk when that comma is this close to the chunk end; 0 turns it off. */
  commaBacktrack?: number;
}

export interface PromptChunks {
  /** Number of 77-token chunks. */
  chunks: number;
  /** [chunks, 77] token ids, BOS + 75 + EOS each, padded with EOS. */
  ids: Int32Array;
  /** [chunks, 77] emphasis multipliers, 1.0 at BOS/EOS/padding. */
  weights: Float32Array;
  /**
   * A1111's token count: 75 per full chunk plus the real length of the last one (what
   * the UI shows as "N/75"); the 75-token budget is ceil(max(count,1)/75)*75.
   */
  tokenCount: number;
}

interface Chunk {
  tokens: number[];
  multipliers: number[];
}

/**
 * Splits a prompt into A1111's 77-token chunks: each weighted piece is tokenized on its
 * own; a chunk closes at 75 tokens, and if the last comma lies within `commaBacktrack`
 * tokens of the end, the tokens after it move to the next chunk; BREAK closes a chunk;
 * an empty prompt gives one chunk of BOS + EOS padding.
 */
export function promptChunks(tokenizer: ClipTokenizer, prompt: string, options: ChunkOptions = {}): PromptChunks {
  const emphasis = options.emphasis ?? 'Original';
  const backtrack = options.commaBacktrack ?? DEFAULT_COMMA_BACKTRACK;
  if (!Number.isInteger(backtrack) || backtrack < 0 || backtrack > CHUNK_LENGTH) {
    throw new RedlineError('bad_option', `Comma backtrack ${backtrack} must be an integer from 0 to ${CHUNK_LENGTH}.`);
  }
  const commaToken = tokenizer.tokenId(',</w>');
  const parsed: WeightedText[] = emphasis === 'None' ? [{ text: prompt, weight: 1.0 }] : parsePromptAttention(prompt);

  const done: Chunk[] = [];
  let chunk: Chunk = { tokens: [], multipliers: [] };
  let tokenCount = 0;
  let lastComma = -1;

  const nextChunk = (isLast = false): void => {
    tokenCount += isLast ? chunk.tokens.length : CHUNK_LENGTH;
    while (chunk.tokens.length < CHUNK_LENGTH) {
      chunk.tokens.push(EOS_ID);
      chunk.multipliers.push(1.0);
    }
    chunk.tokens = [BOS_ID, ...chunk.tokens, EOS_ID];
    chunk.multipliers = [1.0, ...chunk.multipliers, 1.0];
    lastComma = -1;
    done.push(chunk);
    chunk = { tokens: [], multipliers: [] };
  };

  for (const { text, weight } of parsed) {
    // A BREAK inside brackets has its -1 scaled and is then just the word "break" (as in A1111).
    if (text === 'BREAK' && weight === BREAK_WEIGHT) {
      nextChunk();
      continue;
    }
    const tokens = tokenizer.tokenize(text);
    for (const token of tokens) {
      if (token === commaToken) {
        lastComma = chunk.tokens.length;
      } else if (backtrack !== 0 && chunk.tokens.length === CHUNK_LENGTH && lastComma !== -1 &&
        chunk.tokens.length - lastComma <= backtrack) {
        const breakAt = lastComma + 1;
        const movedTokens = chunk.tokens.slice(breakAt);
        const movedMultipliers = chunk.multipliers.slice(breakAt);
        chunk.tokens = chunk.tokens.slice(0, breakAt);
        chunk.multipliers = chunk.multipliers.slice(0, breakAt);
        nextChunk();
        chunk.tokens = movedTokens;
        chunk.multipliers = movedMultipliers;
      }
      if (chunk.tokens.length === CHUNK_LENGTH) nextChunk();
      chunk.tokens.push(token);
      chunk.multipliers.push(weight);
    }
  }
  if (chunk.tokens.length > 0 || done.length === 0) nextChunk(true);

  const ids = new Int32Array(done.length * CONTEXT_LENGTH);
  const weights = new Float32Array(done.length * CONTEXT_LENGTH);
  done.forEach((c, i) => {
    ids.set(c.tokens, i * CONTEXT_LENGTH);
    weights.set(c.multipliers, i * CONTEXT_LENGTH);
  });
  return { chunks: done.length, ids, weights, tokenCount };
}

/** A1111's empty_chunk(): BOS + 76 EOS, all weights 1, used to fill shorter prompts of a batch. */
export function emptyChunk(): { ids: Int32Array; weights: Float32Array } {
  const ids = new Int32Array(CONTEXT_LENGTH).fill(EOS_ID);
  ids[0] = BOS_ID;
  return { ids, weights: new Float32Array(CONTEXT_LENGTH).fill(1) };
}

/**
 * Several prompts encoded together, as A1111 encodes the schedule variants of one prompt
 * (prompt editing) in one call: every prompt gets the largest chunk count, shorter ones
 * filled with emptyChunk(). Layout is chunk-major, [chunks, batch, 77]: slice c is the
 * [batch, 77] input of one text-encoder call, and the whole array is [chunks*batch, 77].
 */
export interface BatchChunks {
  batch: number;
  chunks: number;
  ids: Int32Array;
  weights: Float32Array;
  /** A1111 token count of each prompt. */
  tokenCounts: number[];
}

export function batchPromptChunks(tokenizer: ClipTokenizer, prompts: readonly string[], options: ChunkOptions = {}): BatchChunks {
  if (prompts.length === 0) throw new RedlineError('bad_option', 'No prompts to encode.');
  const each = prompts.map((p) => promptChunks(tokenizer, p, options));
  const chunks = Math.max(...each.map((e) => e.chunks));
  const batch = prompts.length;
  const ids = new Int32Array(chunks * batch * CONTEXT_LENGTH);
  const weights = new Float32Array(chunks * batch * CONTEXT_LENGTH);
  const empty = emptyChunk();
  for (let c = 0; c < chunks; c++) {
    each.forEach((e, b) => {
      const at = (c * batch + b) * CONTEXT_LENGTH;
      if (c < e.chunks) {
        ids.set(e.ids.subarray(c * CONTEXT_LENGTH, (c + 1) * CONTEXT_LENGTH), at);
        weights.set(e.weights.subarray(c * CONTEXT_LENGTH, (c + 1) * CONTEXT_LENGTH), at);
      } else {
        ids.set(empty.ids, at);
        weights.set(empty.weights, at);
      }
    });
  }
  return { batch, chunks, ids, weights, tokenCounts: each.map((e) => e.tokenCount) };
}

/** Mean of float32 values, accumulated in float64 and rounded to float32 like torch's result. */
function meanF32(values: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i]!;
  return Math.fround(sum / values.length);
}

/**
 * Applies emphasis to the encoder output of ONE chunk index for a batch of prompts that
 * A1111 would encode in one call (normally a single prompt): `z` is [batch, 77, hidden]
 * float32, `weights` [batch, 77]. 'Original': z *= w per token, then z *= mean(z_before)
 * / mean(z_after), the means taken over the whole [batch,77,hidden] tensor. Returns a
 * new array; `z` is not modified.
 */
export function applyEmphasis(z: Float32Array, weights: Float32Array, hidden: number, mode: EmphasisMode = 'Original'): Float32Array {
  const positions = weights.length;
  if (z.length !== positions * hidden) {
    throw new RedlineError('shape_mismatch',
      `Emphasis: hidden states have ${z.length} values, expected ${positions} positions x ${hidden}.`);
  }
  const out = new Float32Array(z);
  if (mode === 'Ignore' || mode === 'None') return out;
  const originalMean = mode === 'Original' ? meanF32(z) : 0;
  for (let p = 0; p < positions; p++) {
    const w = Math.fround(weights[p]!);
    if (w === 1) continue;
    const base = p * hidden;
    for (let h = 0; h < hidden; h++) out[base + h] = Math.fround(out[base + h]! * w);
  }
  if (mode === 'Original') {
    const scale = Math.fround(originalMean / meanF32(out));
    for (let i = 0; i < out.length; i++) out[i] = Math.fround(out[i]! * scale);
  }
  return out;
}

/**
 * Emphasis for every chunk of one prompt, then the chunks concatenated along the
 * sequence axis (A1111's torch.hstack): `hidden` is the encoder output for `ids` of
 * `promptChunks`, [chunks, 77, width]; the result is [1, chunks*77, width] (same layout).
 */
export function emphasizeChunks(hiddenStates: Float32Array, chunks: PromptChunks, width: number, mode: EmphasisMode = 'Original'): Float32Array {
  const per = CONTEXT_LENGTH * width;
  if (hiddenStates.length !== chunks.chunks * per) {
    throw new RedlineError('shape_mismatch',
      `Text encoder output has ${hiddenStates.length} values, expected ${chunks.chunks} x ${CONTEXT_LENGTH} x ${width}.`);
  }
  const out = new Float32Array(hiddenStates.length);
  for (let c = 0; c < chunks.chunks; c++) {
    const z = hiddenStates.subarray(c * per, (c + 1) * per);
    const w = chunks.weights.subarray(c * CONTEXT_LENGTH, (c + 1) * CONTEXT_LENGTH);
    out.set(applyEmphasis(z, w, width, mode), c * per);
  }
  return out;
}

/**
 * Emphasis for a BatchChunks encoding: `hiddenStates` is the encoder output for `ids`,
 * [chunks, batch, 77, width]; each chunk index is restored to the mean of its whole
 * [batch, 77, width] slice (A1111 takes z.mean() over the batch of one call). Returns one
 * [1, chunks*77, width] array per prompt, chunks concatenated along the sequence.
 */
export function emphasizeBatch(hiddenStates: Float32Array, encoded: BatchChunks, width: number, mode: EmphasisMode = 'Original'): Float32Array[] {
  const per = CONTEXT_LENGTH * width;
  const { batch, chunks } = encoded;
  if (hiddenStates.length !== chunks * batch * per) {
    throw new RedlineError('shape_mismatch',
      `Text encoder output has ${hiddenStates.length} values, expected ${chunks} x ${batch} x ${CONTEXT_LENGTH} x ${width}.`);
  }
  const outs = Array.from({ length: batch }, () => new Float32Array(chunks * per));
  for (let c = 0; c < chunks; c++) {
    const z = hiddenStates.subarray(c * batch * per, (c + 1) * batch * per);
    const w = encoded.weights.subarray(c * batch * CONTEXT_LENGTH, (c + 1) * batch * CONTEXT_LENGTH);
    const emphasized = applyEmphasis(z, w, width, mode);
    for (let b = 0; b < batch; b++) outs[b]!.set(emphasized.subarray(b * per, (b + 1) * per), c * per);
  }
  return outs;
}

/**
 * How A1111 reconciles a prompt and a negative prompt of different chunk counts
 * (sd_samplers_cfg_denoiser.py):
 * - 'separate' (A1111's default): no padding; cond and uncond go through the UNet in
 *   separate calls, each with its own sequence length. Returned unchanged.
 * - 'empty-prompt' (opts.pad_cond_uncond): the shorter one gets the encoded empty prompt
 *   ("" -> one 77-token chunk, emphasis applied) appended (chunk-count difference) times.
 * - 'v0' (opts.pad_cond_uncond_v0, DDIM before 1.6): uncond is padded by repeating its
 *   last token vector, or cut, to cond's length.
 */
export type CondUncondPadding = 'separate' | 'empty-prompt' | 'v0';

export interface EncodedPrompt {
  /** [1, tokens, width] with tokens a multiple of 77. */
  states: Float32Array;
  tokens: number;
}

export function padCondUncond(
  cond: EncodedPrompt,
  uncond: EncodedPrompt,
  width: number,
  mode: CondUncondPadding,
  emptyPrompt?: Float32Array,
): { cond: EncodedPrompt; uncond: EncodedPrompt } {
  for (const [name, e] of [['cond', cond], ['uncond', uncond]] as const) {
    if (e.states.length !== e.tokens * width) {
      throw new RedlineError('shape_mismatch', `${name} has ${e.states.length} values, expected ${e.tokens} x ${width}.`);
    }
  }
  if (cond.tokens === uncond.tokens || mode === 'separate') return { cond, uncond };
  if (mode === 'v0') {
    const states = new Float32Array(cond.tokens * width);
    const keep = Math.min(cond.tokens, uncond.tokens);
    states.set(uncond.states.subarray(0, keep * width));
    const last = uncond.states.subarray((uncond.tokens - 1) * width, uncond.tokens * width);
    for (let t = keep; t < cond.tokens; t++) states.set(last, t * width);
    return { cond, uncond: { states, tokens: cond.tokens } };
  }
  if (emptyPrompt === undefined || emptyPrompt.length !== CONTEXT_LENGTH * width) {
    throw new RedlineError('shape_mismatch',
      `Padding with the empty prompt needs its encoding as ${CONTEXT_LENGTH} x ${width} values.`);
  }
  // A1111 pads by whole 77-token repeats: (longer - shorter) // 77.
  const repeats = Math.floor(Math.abs(cond.tokens - uncond.tokens) / CONTEXT_LENGTH);
  const pad = (e: EncodedPrompt): EncodedPrompt => {
    const tokens = e.tokens + repeats * CONTEXT_LENGTH;
    const states = new Float32Array(tokens * width);
    states.set(e.states);
    for (let r = 0; r < repeats; r++) states.set(emptyPrompt, (e.tokens + r * CONTEXT_LENGTH) * width);
    return { states, tokens };
  };
  return cond.tokens < uncond.tokens ? { cond: pad(cond), uncond } : { cond, uncond: pad(uncond) };
}
