// interpolate() against values worked out by hand from PyTorch's documented rules for
// torch.nn.functional.interpolate(align_corners=False) (see src/pipeline/interpolate.ts).
// Most inputs are x[i][j] = 1 + j + 2i: every mode's weights sum to 1 along each axis, so
// the 2-D result is 1 + r(j) + 2 r(i), with r the 1-D resize of [0, 1] (or [0, 1, 2, 3]).
import { describe, expect, it } from 'vitest';
import { RedlineError } from '../../src/errors.ts';
import { interpolate } from '../../src/pipeline/interpolate.ts';

const ramp2 = new Float32Array([1, 2, 3, 4]); // [[1, 2], [3, 4]]
const shape2 = { n: 1, c: 1, h: 2, w: 2 };

/** 1 + r[j] + 2 r[i] for the separable ramp. */
function fromOneD(rows: number[], cols: number[]): number[] {
  return rows.flatMap((ri) => cols.map((rj) => 1 + rj + 2 * ri));
}

function expectClose(actual: Float32Array, expected: number[], tol = 1e-6): void {
  expect(actual.length).toBe(expected.length);
  actual.forEach((v, i) => expect(Math.abs(v - expected[i]!)).toBeLessThanOrEqual(tol));
}

describe('interpolate: modes of A1111\'s latent upscalers', () => {
  it('bilinear 2x2 -> 4x4: src = max((dst + 0.5) / 2 - 0.5, 0)', () => {
    // dst 0: src -0.25 -> 0 (x0); dst 1: 0.25 -> .75 x0 + .25 x1; dst 2: 0.75; dst 3: 1.25 -> x1 (clamped)
    const r = [0, 0.25, 0.75, 1];
    expectClose(interpolate(ramp2, shape2, 4, 4, 'bilinear'), fromOneD(r, r));
    // The well-known torch output, row by row.
    expect(Array.from(interpolate(ramp2, shape2, 4, 4, 'bilinear'))).toEqual([
      1, 1.25, 1.75, 2, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3, 3.25, 3.75, 4,
    ]);
  });

  it('bicubic 2x2 -> 4x4: Keys cubic A = -0.75, border indices clamped', () => {
    // dst 0: src -0.25, floor -1, t 0.75. Weights of taps -2..1 (clamped to 0,0,0,1):
    //   W2(1.75) = -0.03515625, W1(0.75) = 0.26171875, W1(0.25) = 0.87890625, W2(1.25) = -0.10546875
    //   r(0) = -0.10546875 (weight of index 1 times 1)
    // dst 1: src 0.25, t 0.25; taps -1..2 -> 0,0,1,1 with W2(1.25), W1(0.25), W1(0.75), W2(1.75)
    //   r(1) = 0.26171875 - 0.03515625 = 0.2265625; r(2), r(3) by symmetry: 1 - r(1), 1 - r(0)
    const r = [-0.10546875, 0.2265625, 0.7734375, 1.10546875];
    const out = interpolate(ramp2, shape2, 4, 4, 'bicubic');
    expectClose(out, fromOneD(r, r));
    expect(out[0]).toBeCloseTo(0.68359375, 7); // torch prints 0.6836
  });

  it('bilinear antialiased equals bilinear when upscaling, differs when downscaling', () => {
    const r = [0, 0.25, 0.75, 1];
    expectClose(interpolate(ramp2, shape2, 4, 4, 'bilinear', true), fromOneD(r, r));
    // [0,1,2,3] -> 2 (scale 2, support 2): out 0, center 1, taps 0..2 with triangle((j - 1 + 0.5) / 2)
    // = .75, .75, .25 -> (0*.75 + 1*.75 + 2*.25) / 1.75 = 5/7; out 1, center 3, taps 1..3 -> 16/7.
    const row = new Float32Array([0, 1, 2, 3]);
    expectClose(interpolate(row, { n: 1, c: 1, h: 1, w: 4 }, 1, 2, 'bilinear', true), [5 / 7, 16 / 7]);
    // without antialias: src = (dst + .5) * 2 - .5 = 0.5, 2.5
    expectClose(interpolate(row, { n: 1, c: 1, h: 1, w: 4 }, 1, 2, 'bilinear'), [0.5, 2.5]);
  });

  it('bicubic antialiased 2 -> 4: Pillow\'s cubic (a = -0.5) over the taps inside the image, normalised', () => {
    // out 0: center .25, taps j = 0, 1 (j = -1 is outside): f(0.25) = 0.8671875, f(1.25) = -0.0703125
    //   r(0) = -0.0703125 / 0.796875
    // out 1: center .75, taps 0, 1: f(-0.25) = 0.8671875, f(0.75) = 0.2265625 -> r(1) = 0.2265625 / 1.09375
    const r0 = -0.0703125 / 0.796875;
    const r1 = 0.2265625 / 1.09375;
    const r = [r0, r1, 1 - r1, 1 - r0];
    expectClose(interpolate(ramp2, shape2, 4, 4, 'bicubic', true), fromOneD(r, r));
  });

  it('nearest 2x2 -> 3x3: floor(dst * 2/3) -> 0, 0, 1', () => {
    expect(Array.from(interpolate(ramp2, shape2, 3, 3, 'nearest'))).toEqual([1, 1, 2, 1, 1, 2, 3, 3, 4]);
  });

  it('nearest-exact 2x2 -> 3x3: floor((dst + .5) * 2/3) -> 0, 1, 1', () => {
    expect(Array.from(interpolate(ramp2, shape2, 3, 3, 'nearest-exact'))).toEqual([1, 2, 2, 3, 4, 4, 3, 4, 4]);
  });

  it('nearest doubling repeats each value; planes (batch x channels) resize independently', () => {
    const x = new Float32Array([1, 2, 3, 4, 10, 20, 30, 40]); // n=1, c=2
    const out = interpolate(x, { n: 1, c: 2, h: 2, w: 2 }, 4, 4, 'nearest');
    expect(Array.from(out.subarray(0, 16))).toEqual([1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4]);
    expect(Array.from(out.subarray(16))).toEqual([10, 10, 20, 20, 10, 10, 20, 20, 30, 30, 40, 40, 30, 30, 40, 40]);
  });

  it('non-square: 2x2 -> 2x4 bilinear resizes the width only', () => {
    expectClose(interpolate(ramp2, shape2, 2, 4, 'bilinear'), fromOneD([0, 1], [0, 0.25, 0.75, 1]));
  });

  it('refuses antialias with nearest modes, as torch does', () => {
    expect(() => interpolate(ramp2, shape2, 4, 4, 'nearest', true)).toThrow(RedlineError);
  });
});
