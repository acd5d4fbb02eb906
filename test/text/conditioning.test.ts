import { describe, expect, it } from 'vitest';
import {
  applyEmphasis, batchPromptChunks, emphasizeBatch, emphasizeChunks, emptyChunk, padCondUncond, promptChunks,
} from '../../src/text/conditioning.ts';
import { letterId, letterTokenizer } from './synthetic-tokenizer.ts';

const BOS = 49406;
const EOS = 49407;
const tok = letterTokenizer();
const words = (ch: string, n: number) => Array(n).fill(ch).join(' ');
const chunkIds = (c: { ids: Int32Array }, i: number) => Array.from(c.ids.subarray(i * 77, (i + 1) * 77));
const chunkWeights = (c: { weights: Float32Array }, i: number) => Array.from(c.weights.subarray(i * 77, (i + 1) * 77));
/** BOS + content + EOS padding to 77. */
const padded = (content: number[]) => [BOS, ...content, ...Array(76 - content.length).fill(EOS)];

describe('promptChunks: A1111 tokenize_line', () => {
  it('the synthetic tokenizer gives one token per one-letter word', () => {
    expect(tok.tokenize('x y , z')).toEqual([letterId('x'), letterId('y'), letterId(','), letterId('z')]);
  });

  it('an empty prompt is one chunk of BOS + 76 EOS with weight 1', () => {
    const c = promptChunks(tok, '');
    expect(c.chunks).toBe(1);
    expect(chunkIds(c, 0)).toEqual(padded([]));
    expect(chunkWeights(c, 0)).toEqual(Array(77).fill(1));
    expect(c.tokenCount).toBe(0);
  });

  it('75 tokens fit one chunk; the 76th opens a second', () => {
    const one = promptChunks(tok, words('x', 75));
    expect(one.chunks).toBe(1);
    expect(chunkIds(one, 0)).toEqual([BOS, ...Array(75).fill(letterId('x')), EOS]);
    expect(one.tokenCount).toBe(75);

    const two = promptChunks(tok, words('x', 76));
    expect(two.chunks).toBe(2);
    expect(chunkIds(two, 1)).toEqual(padded([letterId('x')]));
    expect(two.tokenCount).toBe(76);
  });

  it('comma within 20 tokens of the chunk end: the text after it moves to the next chunk', () => {
    // 60 x, a comma at index 60, then 20 y: at the 76th token the comma is 75-60 = 15 from the end.
    const c = promptChunks(tok, `${words('x', 60)} , ${words('y', 20)}`);
    expect(c.chunks).toBe(2);
    expect(chunkIds(c, 0)).toEqual(padded([...Array(60).fill(letterId('x')), letterId(',')]));
    expect(chunkIds(c, 1)).toEqual(padded(Array(20).fill(letterId('y'))));
    expect(c.tokenCount).toBe(75 + 20);
  });

  it('comma exactly 20 from the end still backtracks', () => {
    const c = promptChunks(tok, `${words('x', 55)} , ${words('y', 25)}`);
    expect(chunkIds(c, 0)).toEqual(padded([...Array(55).fill(letterId('x')), letterId(',')]));
    expect(chunkIds(c, 1)).toEqual(padded(Array(25).fill(letterId('y'))));
  });

  it('comma 21 or more from the end: plain split at 75', () => {
    const c = promptChunks(tok, `${words('x', 54)} , ${words('y', 26)}`);
    expect(chunkIds(c, 0)).toEqual([BOS, ...Array(54).fill(letterId('x')), letterId(','), ...Array(20).fill(letterId('y')), EOS]);
    expect(chunkIds(c, 1)).toEqual(padded(Array(6).fill(letterId('y'))));
  });

  it('commaBacktrack 0 turns the rule off; another limit moves the threshold', () => {
    const off = promptChunks(tok, `${words('x', 60)} , ${words('y', 20)}`, { commaBacktrack: 0 });
    expect(chunkIds(off, 1)).toEqual(padded(Array(6).fill(letterId('y'))));
    const near = promptChunks(tok, `${words('x', 60)} , ${words('y', 20)}`, { commaBacktrack: 10 });
    expect(chunkIds(near, 1)).toEqual(padded(Array(6).fill(letterId('y'))));
  });

  it('moved tokens keep their weights', () => {
    const c = promptChunks(tok, `${words('x', 60)} , (${words('y', 20)})`);
    expect(chunkWeights(c, 1).slice(1, 21)).toEqual(Array(20).fill(Math.fround(1.1)));
    expect(chunkWeights(c, 1)[21]).toBe(1);
  });

  it('BREAK closes the chunk', () => {
    const c = promptChunks(tok, 'a b BREAK c');
    expect(c.chunks).toBe(2);
    expect(chunkIds(c, 0)).toEqual(padded([letterId('a'), letterId('b')]));
    expect(chunkIds(c, 1)).toEqual(padded([letterId('c')]));
    expect(c.tokenCount).toBe(76);
  });

  it('a BREAK at the very start gives an empty first chunk; a lone BREAK one chunk', () => {
    const c = promptChunks(tok, 'BREAK a');
    expect(c.chunks).toBe(2);
    expect(chunkIds(c, 0)).toEqual(padded([]));
    expect(chunkIds(c, 1)).toEqual(padded([letterId('a')]));
    expect(promptChunks(tok, 'BREAK').chunks).toBe(1);
  });

  it('BREAK right after a full chunk adds no empty chunk', () => {
    const c = promptChunks(tok, `${words('x', 75)} BREAK y`);
    expect(c.chunks).toBe(2);
    expect(chunkIds(c, 1)).toEqual(padded([letterId('y')]));
  });

  it('per-token weights; BOS, EOS and padding weigh 1', () => {
    const c = promptChunks(tok, '(a) [b] (c:1.5) d');
    expect(chunkIds(c, 0).slice(0, 6)).toEqual([BOS, letterId('a'), letterId('b'), letterId('c'), letterId('d'), EOS]);
    expect(chunkWeights(c, 0).slice(0, 6)).toEqual([1, Math.fround(1.1), Math.fround(1 / 1.1), 1.5, 1, 1]);
    expect(chunkWeights(c, 0).slice(6)).toEqual(Array(71).fill(1));
  });

  it("emphasis 'None' keeps brackets and BREAK as text", () => {
    const c = promptChunks(tok, '(a) BREAK', { emphasis: 'None' });
    expect(c.chunks).toBe(1);
    // '(' 'a' ')' then 'break' as five letters with '</w>' on the last.
    expect(chunkIds(c, 0).slice(1, 4)).toEqual([letterId('('), letterId('a'), letterId(')')]);
    expect(chunkWeights(c, 0)).toEqual(Array(77).fill(1));
  });

  it('emptyChunk is BOS + 76 EOS', () => {
    const e = emptyChunk();
    expect(Array.from(e.ids)).toEqual(padded([]));
    expect(Array.from(e.weights)).toEqual(Array(77).fill(1));
  });
});

describe('applyEmphasis: A1111 sd_emphasis', () => {
  // z = [[1,2],[3,4]], weights [1,2]: multiplied [[1,2],[6,8]]; means 10/4 and 17/4, so scale 10/17.
  const z = new Float32Array([1, 2, 3, 4]);
  const w = new Float32Array([1, 2]);
  it("'Original' multiplies and restores the mean", () => {
    const out = Array.from(applyEmphasis(z, w, 2, 'Original'));
    [10 / 17, 20 / 17, 60 / 17, 80 / 17].forEach((v, i) => expect(out[i]).toBeCloseTo(v, 6));
  });
  it("'No norm' only multiplies", () => {
    expect(Array.from(applyEmphasis(z, w, 2, 'No norm'))).toEqual([1, 2, 6, 8]);
  });
  it("'Ignore' leaves the states as they are, and the input is never modified", () => {
    expect(Array.from(applyEmphasis(z, w, 2, 'Ignore'))).toEqual([1, 2, 3, 4]);
    expect(Array.from(z)).toEqual([1, 2, 3, 4]);
  });
  it('rejects mismatched shapes', () => {
    expect(() => applyEmphasis(z, new Float32Array(3), 2)).toThrow(/expected 3 positions/);
  });
});

describe('emphasizeChunks: per-chunk mean restoration, chunks concatenated', () => {
  it('restores each chunk to its own mean', () => {
    const c = promptChunks(tok, `(a) BREAK b`);
    expect(c.chunks).toBe(2);
    // width 1: chunk 0 all ones, chunk 1 all twos. Chunk 0 position 1 has weight 1.1:
    // sum becomes 76 + 1.1, so scale 77/77.1; chunk 1 has weight 1 everywhere and stays.
    const hidden = new Float32Array(154);
    hidden.fill(1, 0, 77);
    hidden.fill(2, 77, 154);
    const out = emphasizeChunks(hidden, c, 1);
    const w = Math.fround(1.1);
    const scale = 77 / (76 + w);
    expect(out[0]).toBeCloseTo(scale, 6);
    expect(out[1]).toBeCloseTo(w * scale, 6);
    expect(out[76]).toBeCloseTo(scale, 6);
    expect(Array.from(out.subarray(77))).toEqual(Array(77).fill(2));
  });
});

describe('padCondUncond: A1111 cond/uncond length handling', () => {
  const width = 1;
  const enc = (chunks: number, v: number) => ({ states: new Float32Array(chunks * 77).map((_, i) => v + i / 1000), tokens: chunks * 77 });
  const empty = new Float32Array(77).fill(-5);

  it("'separate' (A1111 default) leaves both alone", () => {
    const cond = enc(2, 1);
    const uncond = enc(1, 2);
    const r = padCondUncond(cond, uncond, width, 'separate');
    expect(r.cond).toBe(cond);
    expect(r.uncond).toBe(uncond);
  });

  it("'empty-prompt' appends the empty-prompt encoding to the shorter side", () => {
    const cond = enc(3, 1);
    const uncond = enc(1, 2);
    const r = padCondUncond(cond, uncond, width, 'empty-prompt', empty);
    expect(r.cond).toBe(cond);
    expect(r.uncond.tokens).toBe(231);
    expect(Array.from(r.uncond.states.subarray(0, 77))).toEqual(Array.from(uncond.states));
    expect(Array.from(r.uncond.states.subarray(77))).toEqual(Array(154).fill(-5));
    const flipped = padCondUncond(uncond, cond, width, 'empty-prompt', empty);
    expect(flipped.cond.tokens).toBe(231);
    expect(flipped.uncond).toBe(cond);
  });

  it("'v0' repeats uncond's last vector, or cuts uncond to cond's length", () => {
    const longer = padCondUncond(enc(2, 1), enc(1, 2), width, 'v0');
    expect(longer.uncond.tokens).toBe(154);
    expect(longer.uncond.states[76]).toBeCloseTo(2.076, 6);
    expect(Array.from(longer.uncond.states.subarray(77))).toEqual(Array(77).fill(Math.fround(2.076)));
    const cut = padCondUncond(enc(1, 1), enc(2, 2), width, 'v0');
    expect(cut.uncond.tokens).toBe(77);
    expect(cut.uncond.states[76]).toBeCloseTo(2.076, 6);
  });

  it('needs the empty-prompt encoding for empty-prompt padding', () => {
    expect(() => padCondUncond(enc(2, 1), enc(1, 1), width, 'empty-prompt')).toThrow(/empty prompt/);
  });
});

describe('batchPromptChunks / emphasizeBatch: prompts encoded together (prompt-editing variants)', () => {
  it('fills shorter prompts with empty chunks, chunk-major', () => {
    const b = batchPromptChunks(tok, ['a', 'b BREAK c']);
    expect([b.batch, b.chunks]).toEqual([2, 2]);
    const row = (i: number) => Array.from(b.ids.subarray(i * 77, (i + 1) * 77));
    expect(row(0)).toEqual(padded([letterId('a')])); // chunk 0, prompt 0
    expect(row(1)).toEqual(padded([letterId('b')])); // chunk 0, prompt 1
    expect(row(2)).toEqual(padded([])); // chunk 1, prompt 0: empty chunk
    expect(row(3)).toEqual(padded([letterId('c')])); // chunk 1, prompt 1
    expect(b.tokenCounts).toEqual([1, 76]);
  });

  it('restores the mean over the whole batch of a chunk, as one A1111 call does', () => {
    const b = batchPromptChunks(tok, ['(a)', 'b']);
    // width 1, all ones: prompt 0 position 1 weighs 1.1, so the batch sum goes 154 -> 153 + 1.1;
    // both prompts are scaled by 154 / (153 + 1.1), prompt 1 too although its weights are all 1.
    const out = emphasizeBatch(new Float32Array(154).fill(1), b, 1);
    const w = Math.fround(1.1);
    const scale = 154 / (153 + w);
    expect(out).toHaveLength(2);
    expect(out[0]![1]).toBeCloseTo(w * scale, 6);
    expect(out[0]![0]).toBeCloseTo(scale, 6);
    expect(out[1]![1]).toBeCloseTo(scale, 6);
    expect(out[1]!.length).toBe(77);
  });

  it('returns each prompt with its chunks concatenated', () => {
    const b = batchPromptChunks(tok, ['a BREAK b', 'c BREAK d']);
    // width 1: value = 10*chunk + prompt, weights all 1 so nothing changes.
    const hidden = new Float32Array(2 * 2 * 77);
    for (let c = 0; c < 2; c++) for (let p = 0; p < 2; p++) hidden.fill(10 * c + p, (c * 2 + p) * 77, (c * 2 + p + 1) * 77);
    const [p0, p1] = emphasizeBatch(hidden, b, 1, 'No norm') as [Float32Array, Float32Array];
    expect([p0[0], p0[77], p1[0], p1[77]]).toEqual([0, 10, 1, 11]);
  });
});
