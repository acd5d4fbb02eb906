/** Float32 arithmetic with the roundings C/CUDA kernels perform, on JS doubles. */
const f = Math.fround;
const bitsF = new Float32Array(1);
const bitsU = new Uint32Array(bitsF.buffer);

/**
 * Single-rounding float fused multiply-add. a*b of two floats is exact in a double, so
 * the only error is the double rounding of the sum, which matters only when the double
 * sum lands exactly on a tie between two floats.
 */
export function fmaF(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = f(s);
  if (r === s) return r;
  // The float on the other side of s if s is their midpoint.
  const other = r + 2 * (s - r);
  if (f(other) !== other) return r;
  const bb = s - p;
  const err = (p - (s - bb)) + (c - bb);
  if (err === 0) return r;
  return (err > 0) === (other > r) ? other : r;
}

/** float a*b rounded toward zero (CUDA's FMUL.RZ). */
export function mulRzF(a: number, b: number): number {
  const p = a * b;
  bitsF[0] = p;
  if (Math.abs(bitsF[0]) > Math.abs(p)) bitsU[0] = bitsU[0]! - 1;
  return bitsF[0]!;
}
