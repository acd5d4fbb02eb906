import { describe, expect, it } from 'vitest';
import { RedlineError } from '../../src/errors.ts';
import { createGenerator, ImageRng, MT19937, philox4x32, randn } from '../../src/sampling/rng/index.ts';

describe('MT19937', () => {
  it('default seed 5489: the 10000th output is 4123659995 (C++ standard, [rand.predef])', () => {
    const mt = new MT19937(5489);
    let v = 0;
    for (let i = 0; i < 10000; i++) v = mt.nextU32();
    expect(v).toBe(4123659995);
  });
});

describe('Philox4x32-10', () => {
  // Known-answer vectors from Random123 (kat_vectors): counter, key -> output.
  it.each([
    [[0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]],
    [[0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff], [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]],
    [[0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0], [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]],
  ])('KAT %#', (ctr, key, expected) => {
    const out = new Uint32Array(4);
    philox4x32(ctr, key[0]!, key[1]!, out);
    expect(Array.from(out)).toEqual(expected);
  });
});

describe('generators', () => {
  it('successive draws continue the stream (a 2n draw is not two n draws on CPU, as in torch)', () => {
    const g = createGenerator(7, 'cpu');
    const a = g.randnInto(new Float32Array(32));
    const b = g.randnInto(new Float32Array(32));
    const both = randn(7, [64]);
    // With numel a multiple of 16 the uniforms are consumed in order, so the halves agree.
    expect(Array.from(both.subarray(0, 32))).toEqual(Array.from(a));
    expect(Array.from(both.subarray(32))).toEqual(Array.from(b));
  });

  it('rejects bad seeds and sources with RedlineErrors', () => {
    expect(() => randn(-1, [4])).toThrow(RedlineError);
    expect(() => randn(1.5, [4])).toThrow(/whole number/);
    expect(() => randn(1, [4], 'tpu' as 'cpu')).toThrow(/Unknown rng source "tpu"/);
  });

  it('GPU mode advances the Philox offset per call: a second draw differs from the first', () => {
    const g = createGenerator(3, 'gpu');
    const a = g.randnInto(new Float32Array(16));
    const b = g.randnInto(new Float32Array(16));
    expect(Array.from(a)).not.toEqual(Array.from(b));
    expect(Array.from(randn(3, [16], 'gpu'))).toEqual(Array.from(a));
  });
});

describe('ImageRng (A1111 ImageRNG)', () => {
  it('eta noise seed delta restarts later draws from seed + delta', () => {
    const rng = new ImageRng({ seeds: [10], shape: [16], etaNoiseSeedDelta: 31337 });
    expect(Array.from(rng.next())).toEqual(Array.from(randn(10, [16])));
    expect(Array.from(rng.next())).toEqual(Array.from(randn(10 + 31337, [16])));
  });

  it('fills sampler noise buffers and checks their size', () => {
    const rng = new ImageRng({ seeds: [1, 2], shape: [4, 2, 2] });
    expect(rng.length).toBe(32);
    expect(() => rng.fill(new Float32Array(16))).toThrow(/a batch draw has 32/);
  });
});
