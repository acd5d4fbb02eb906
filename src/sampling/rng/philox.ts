/**
 * Philox4x32-10 (Salmon et al. 2011) and torch's CUDA randn on top of it, as curand's
 * curand_init/curand_normal4 and ATen's distribution kernel use them.
 */
import { fmaF, mulRzF } from './float32.ts';

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;

/** High and low 32-bit words of a 32x32-bit product, exact (no float rounding). */
function mulhilo(a: number, b: number, out: Uint32Array, hiIdx: number, loIdx: number): void {
  const low16 = (a & 0xffff) * b;
  const upper = (a >>> 16) * b + Math.floor(low16 / 65536);
  out[hiIdx] = Math.floor(upper / 65536);
  out[loIdx] = Math.imul(a, b);
}

const scratch = new Uint32Array(4);

/** Ten Philox rounds; writes the 4 output words into `out` (may alias ctr). */
export function philox4x32(ctr: ArrayLike<number>, key0: number, key1: number, out: Uint32Array): void {
  let c0 = ctr[0]! >>> 0, c1 = ctr[1]! >>> 0, c2 = ctr[2]! >>> 0, c3 = ctr[3]! >>> 0;
  let k0 = key0 >>> 0, k1 = key1 >>> 0;
  for (let round = 0; round < 10; round++) {
    mulhilo(M0, c0, scratch, 0, 1);
    mulhilo(M1, c2, scratch, 2, 3);
    const n0 = (scratch[2]! ^ c1 ^ k0) >>> 0;
    const n1 = scratch[3]!;
    const n2 = (scratch[0]! ^ c3 ^ k1) >>> 0;
    const n3 = scratch[1]!;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 = (k0 + W0) >>> 0;
    k1 = (k1 + W1) >>> 0;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

const f = Math.fround;
const INV_2PI_F = f(1 / (2 * Math.PI));
const TWO_POW_M32 = 2 ** -32;
const TWO_POW_M33 = 2 ** -33;
/** curand's CURAND_2POW32_INV_2PI: 2^-32 * 2pi folded in float arithmetic. */
const TWO_PI_OVER_2POW32 = f(f(2.3283064e-10) * f(6.2831855));

/** Threads a CUDA device runs for torch's distribution kernels (block 256, <= SMs*2048/256 blocks). */
export interface CudaLaunchShape {
  multiProcessorCount: number;
  maxThreadsPerMultiProcessor: number;
}

/** NVIDIA H100 SXM (132 SMs); decides the element order only above 270,336 elements. */
export const H100_LAUNCH: CudaLaunchShape = { multiProcessorCount: 132, maxThreadsPerMultiProcessor: 2048 };

const BLOCK = 256;
const UNROLL = 4;

/**
 * torch.Generator('cuda') for torch.randn(float32): Philox4x32-10 keyed by the seed, one
 * curand subsequence per thread, the generator's offset advanced per call by the number
 * of 32-bit draws each thread consumed (rounded to 4), curand_normal4's Box-Muller.
 *
 * Not bit-exact: curand's device Box-Muller uses logf and the __sincosf hardware
 * approximation (SFU, abs error ~2^-21), which no portable code reproduces; the integer
 * stream and the element order are exact, values agree to a few float ulps.
 */
export class TorchCudaGenerator {
  private key0: number;
  private key1: number;
  /** Philox offset in 32-bit draws per thread (torch's philox_offset_per_thread). */
  private offset = 0;
  private readonly ctr = new Uint32Array(4);
  private readonly words = new Uint32Array(4);
  private readonly normals = new Float32Array(4);

  constructor(seed: number | bigint, private readonly launch: CudaLaunchShape = H100_LAUNCH) {
    const s = BigInt.asUintN(64, BigInt(seed));
    this.key0 = Number(s & 0xffffffffn);
    this.key1 = Number(s >> 32n);
  }

  manualSeed(seed: number | bigint): this {
    const s = BigInt.asUintN(64, BigInt(seed));
    this.key0 = Number(s & 0xffffffffn);
    this.key1 = Number(s >> 32n);
    this.offset = 0;
    return this;
  }

  randnInto(out: Float32Array): Float32Array {
    const n = out.length;
    if (n === 0) return out;
    const maxBlocks = this.launch.multiProcessorCount * Math.floor(this.launch.maxThreadsPerMultiProcessor / BLOCK);
    const blocks = Math.min(Math.ceil(n / BLOCK), maxBlocks);
    const stride = blocks * BLOCK;
    const callsPerThread = Math.floor((n - 1) / (stride * UNROLL)) + 1;
    const baseCounter = this.offset / 4;
    for (let t = 0; t < stride; t++) {
      for (let call = 0; call < callsPerThread; call++) {
        const first = t + call * stride * UNROLL;
        if (first >= n) break;
        // Unused lanes (idx >= n) are skipped: they only cost time, not stream position.
        const lanes = Math.min(UNROLL, Math.floor((n - 1 - first) / stride) + 1);
        this.normal4(t, baseCounter + call, lanes);
        for (let k = 0; k < lanes; k++) out[first + k * stride] = this.normals[k]!;
      }
    }
    this.offset += callsPerThread * UNROLL;
    return out;
  }

  /** curand_normal4 for subsequence `thread` at 128-bit counter position `counter`. */
  private normal4(thread: number, counter: number, lanes: number): void {
    const c = this.ctr;
    c[0] = counter % 4294967296;
    c[1] = Math.floor(counter / 4294967296);
    c[2] = thread;
    c[3] = 0;
    philox4x32(c, this.key0, this.key1, this.words);
    const w = this.words;
    boxMullerCurand(w[0]!, w[1]!, this.normals, 0);
    if (lanes > 2) boxMullerCurand(w[2]!, w[3]!, this.normals, 2);
  }
}

function boxMullerCurand(x: number, y: number, out: Float32Array, at: number): void {
  const u = f(f(x) * TWO_POW_M32 + TWO_POW_M33);
  // nvcc contracts y*C + C/2 into one fused multiply-add.
  const v = fmaF(f(y), TWO_PI_OVER_2POW32, f(TWO_PI_OVER_2POW32 / 2));
  const s = f(Math.sqrt(f(-2 * f(Math.log(u)))));
  // __sincosf: the SFU takes the argument in turns, scaled by 1/2pi rounded toward zero.
  const t = mulRzF(v, INV_2PI_F);
  out[at] = f(f(Math.sin(2 * Math.PI * t)) * s);
  out[at + 1] = f(f(Math.cos(2 * Math.PI * t)) * s);
}
