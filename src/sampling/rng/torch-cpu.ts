import { fmaF } from './float32.ts';
import { MT19937 } from './mt19937.ts';

const TWO_POW_M24 = 1 / 16777216;
const TWO_POW_M53 = 1 / 9007199254740992;
const TWO_PI_F32 = Math.fround(2 * Math.PI);
const f = Math.fround;

/**
 * torch.Generator('cpu') for torch.randn(float32): the same mt19937 stream, the same
 * uniform-to-normal transforms, so a seed gives the tensor PyTorch gives.
 *
 * torch picks one of two transforms per call:
 * - numel >= 16 (contiguous float32): fill all numel uniforms (24-bit, float), then
 *   Box-Muller over 16-element blocks (first 8 = u1, last 8 = u2, float arithmetic); a
 *   ragged tail redraws the LAST 16 elements with 16 fresh uniforms and redoes that block.
 * - numel < 16: one scalar normal per element from at::normal_distribution<double>
 *   (53-bit uniforms, double Box-Muller, the sine half cached for the next element).
 */
export class TorchCpuGenerator {
  private readonly mt: MT19937;
  private cachedNormal: number | null = null;

  constructor(seed: number | bigint) {
    this.mt = new MT19937(seed);
  }

  manualSeed(seed: number | bigint): this {
    this.mt.seed(seed);
    this.cachedNormal = null;
    return this;
  }

  /** Float uniform in [0,1) from the low 24 bits of one 32-bit draw. */
  private uniformF32(): number {
    return (this.mt.nextU32() & 0xffffff) * TWO_POW_M24;
  }

  /** Double uniform in [0,1) from the low 53 bits of a 64-bit draw (first draw = high word). */
  private uniformF64(): number {
    const hi = this.mt.nextU32();
    const lo = this.mt.nextU32();
    return ((hi & 0x1fffff) * 4294967296 + lo) * TWO_POW_M53;
  }

  private normalF64(): number {
    if (this.cachedNormal !== null) {
      const v = this.cachedNormal;
      this.cachedNormal = null;
      return v;
    }
    const u1 = this.uniformF64();
    const u2 = this.uniformF64();
    const r = Math.sqrt(-2 * Math.log1p(-u2));
    const theta = 2 * Math.PI * u1;
    this.cachedNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  /** Fills `out` exactly as torch.randn(out.length) with this generator would. */
  randnInto(out: Float32Array): Float32Array {
    const n = out.length;
    if (n < 16) {
      for (let i = 0; i < n; i++) out[i] = this.normalF64();
      return out;
    }
    for (let i = 0; i < n; i++) out[i] = this.uniformF32();
    for (let i = 0; i + 16 <= n; i += 16) boxMuller16(out, i);
    if (n % 16 !== 0) {
      const start = n - 16;
      for (let i = 0; i < 16; i++) out[start + i] = this.uniformF32();
      boxMuller16(out, start);
    }
    return out;
  }
}

/**
 * torch's x86 builds run this Box-Muller with AVX2 float kernels: Cephes single-precision
 * log and sincos polynomials (avx_mathfun), compiled with FMA contraction (every
 * multiply feeding an add is fused). libm differs from them by an ulp on ~1 in 6
 * elements, and unfused arithmetic on ~1 in 100, so they are reproduced here operation by
 * operation: f() is one float rounding, fmaF() one fused rounding.
 */
function boxMuller16(d: Float32Array, o: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f(1 - d[o + j]!);
    const u2 = d[o + j + 8]!;
    const radius = f(Math.sqrt(f(-2 * cephesLogF(u1))));
    cephesSinCosF(f(TWO_PI_F32 * u2));
    d[o + j] = f(radius * sincosOut[1]!);
    d[o + j + 8] = f(radius * sincosOut[0]!);
  }
}

const bitsF = new Float32Array(1);
const bitsU = new Uint32Array(bitsF.buffer);

const SQRT_HALF = f(0.707106781186547524);
const LOG_P = [
  7.0376836292e-2, -1.151461031e-1, 1.167699874e-1, -1.2420140846e-1, 1.4249322787e-1,
  -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1,
].map(f);
const LOG_Q1 = f(-2.12194440e-4);
const LOG_Q2 = f(0.693359375);

/** Natural log of a positive normal float, Cephes logf as the AVX2 kernel evaluates it. */
function cephesLogF(xIn: number): number {
  bitsF[0] = Math.max(xIn, 1.1754943508222875e-38);
  const bits = bitsU[0]!;
  let e = f((bits >>> 23) - 127 + 1);
  bitsU[0] = (bits & ~0x7f800000) | 0x3f000000;
  let x = bitsF[0]!;
  if (x < SQRT_HALF) {
    const doubled = x;
    e = f(e - 1);
    x = f(f(x - 1) + doubled);
  } else {
    x = f(x - 1);
  }
  const z = f(x * x);
  let y = LOG_P[0]!;
  for (let k = 1; k < LOG_P.length; k++) y = fmaF(y, x, LOG_P[k]!);
  y = f(y * x);
  y = fmaF(y, z, f(e * LOG_Q1));
  y = f(y - f(z * 0.5));
  x = f(x + y);
  return fmaF(e, LOG_Q2, x);
}

const FOUR_OVER_PI = f(1.27323954473516);
const NEG_DP1 = f(-0.78515625);
const NEG_DP2 = f(-2.4187564849853515625e-4);
const NEG_DP3 = f(-3.77489497744594108e-8);
const SIN_P0 = f(-1.9515295891e-4);
const SIN_P1 = f(8.3321608736e-3);
const SIN_P2 = f(-1.6666654611e-1);
const COS_P0 = f(2.443315711809948e-5);
const COS_P1 = f(-1.388731625493765e-3);
const COS_P2 = f(4.166664568298827e-2);
/** [sin, cos] of the last cephesSinCosF call (avoids a per-call allocation). */
const sincosOut = new Float32Array(2);

/** sin and cos of a non-negative float, Cephes sinf/cosf octant reduction as in AVX2. */
function cephesSinCosF(xIn: number): void {
  const x0 = Math.abs(xIn);
  let octant = Math.trunc(f(x0 * FOUR_OVER_PI));
  octant = (octant + 1) & ~1;
  const y = f(octant);
  const flipSin = (octant & 4) !== 0;
  const flipCos = (~(octant - 2) & 4) !== 0;
  const useSinPoly = (octant & 2) === 0;
  let x = fmaF(y, NEG_DP1, x0);
  x = fmaF(y, NEG_DP2, x);
  x = fmaF(y, NEG_DP3, x);
  const z = f(x * x);
  let c = fmaF(COS_P0, z, COS_P1);
  c = fmaF(c, z, COS_P2);
  c = f(c * z);
  c = fmaF(c, z, -f(z * 0.5));
  c = f(c + 1);
  let s = fmaF(SIN_P0, z, SIN_P1);
  s = fmaF(s, z, SIN_P2);
  s = f(s * z);
  s = fmaF(s, x, x);
  const sin = useSinPoly ? s : c;
  const cos = useSinPoly ? c : s;
  sincosOut[0] = flipSin ? -sin : sin;
  sincosOut[1] = flipCos ? -cos : cos;
}
