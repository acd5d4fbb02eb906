/** Float32 arithmetic with the roundings C/CUDA kernels perform, on JS doubles. */
const f = Math.fround;
const bitsF = new Float32Array(1);
const bitsU = new Uint32Array(bitsF.buffer);

/**
 * Single-rounding float fused multiply-add. a*b of two floats is exact in a double; the
 * sum's double rounding is corrected when it lands on a float tie.
 */
export function fmaF(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = f(s);
  const bb = s - p;
  const err = (p - (s - bb)) + (c - bb);
  if (err === 0 || r === s) return r;
  // s was not representable; only a tie between two floats can round the wrong way.
  const other = s > r ? nextUpF(r) : nextDownF(r);
  if (Math.abs(other - s) !== Math.abs(r - s)) return r;
  return (err > 0) === (other > r) ? other : r;
}

function nextUpF(x: number): number {
  bitsF[0] = x;
  if (x >= 0) bitsU[0] = bitsU[0]! + 1; else bitsU[0] = bitsU[0]! - 1;
  return bitsF[0]!;
}

function nextDownF(x: number): number {
  bitsF[0] = x;
  if (x > 0) bitsU[0] = bitsU[0]! - 1; else if (x === 0) bitsU[0] = 0x80000001; else bitsU[0] = bitsU[0]! + 1;
  return bitsF[0]!;
}

/** float a*b rounded toward zero (CUDA's FMUL.RZ). */
export function mulRzF(a: number, b: number): number {
  const p = a * b;
  bitsF[0] = p;
  if (Math.abs(bitsF[0]) > Math.abs(p)) bitsU[0] = bitsU[0]! - 1;
  return bitsF[0]!;
}
