import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { trainBpe, writeBpeVocabulary } from '../../src/text/bpe-trainer.ts';
import { BOS_ID, EOS_ID, loadTokenizer } from '../../src/text/tokenizer.ts';
import { SeededRandom } from '../../src/train/procedural/random.ts';
import { captionOf, sampleScene } from '../../src/train/procedural/scenes.ts';

const dir = mkdtempSync(join(tmpdir(), 'bpe-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Inverse of the byte-level mapping, written out independently of the trainer.
function decode(tok: ReturnType<typeof loadTokenizer>, ids: number[]): string {
  const printable = (b: number): boolean => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  const charToByte = new Map<string, number>();
  let extra = 0;
  for (let b = 0; b < 256; b++) charToByte.set(printable(b) ? String.fromCharCode(b) : String.fromCharCode(256 + extra++), b);
  const words = ids.map((id) => tok.tokenString(id)).join('').split('</w>').filter((w) => w !== '');
  return words.map((w) => new TextDecoder().decode(Uint8Array.from([...w].map((c) => charToByte.get(c)!)))).join(' ');
}

function captions(seed: number, n: number): string[] {
  const rng = new SeededRandom(seed);
  return Array.from({ length: n }, (_, i) => captionOf(sampleScene(rng, (i % 4) as 0 | 1 | 2 | 3), { intensityTag: i % 2 === 0 }));
}

describe('BPE trainer', () => {
  const train = captions(1, 400);
  const v = trainBpe(train);
  writeBpeVocabulary(dir, v);
  const tok = loadTokenizer(dir);

  it('writes the CLIP file format', () => {
    const merges = readFileSync(join(dir, 'merges.txt'), 'utf8').split('\n');
    expect(merges[0]).toBe('#version: 0.2');
    const vocab = JSON.parse(readFileSync(join(dir, 'vocab.json'), 'utf8')) as Record<string, number>;
    expect(vocab['<|startoftext|>']).toBe(BOS_ID);
    expect(vocab['<|endoftext|>']).toBe(EOS_ID);
    expect(vocab['a</w>']).toBeTypeOf('number');
    expect(vocab['!']).toBe(0); // byte-level base symbols in GPT-2 byte order
  });

  it('round-trips held-out captions and gives each caption word one token', () => {
    for (const c of captions(2, 50)) {
      const ids = tok.tokenize(c);
      expect(decode(tok, ids)).toBe(c.replace(/,/g, ' ,').replace(/:/g, ' : '));
      // every word of the caption grammar is frequent in training: one token per split word
      const pieces = c.match(/\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/gu)!;
      expect(ids.length).toBe(pieces.length);
    }
  });

  it('falls back to bytes for unseen words', () => {
    const ids = tok.tokenize('zebra-qux ü');
    expect(decode(tok, ids)).toBe('zebra - qux ü');
    expect(ids.length).toBeGreaterThan(3);
  });

  it('is deterministic and order-independent', () => {
    const again = trainBpe([...train].reverse());
    expect(again.merges).toEqual(v.merges);
    expect([...again.vocab]).toEqual([...v.vocab]);
  });

  it('rejects an empty corpus', () => {
    expect(() => trainBpe([])).toThrow(/empty/);
  });
});
