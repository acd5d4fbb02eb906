// IEEE 754 binary16 and bfloat16 <-> float32 conversion on raw bit patterns.
// Conversions to half round to nearest even, as torch's .half() / .bfloat16() do.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

// Lookup tables make f16 -> f32 a pair of table reads per element (the hot path: fp16
// checkpoints are widened once at load).
const mantissaTable = new Uint32Array(2048);
const exponentTable = new Uint32Array(64);
const offsetTable = new Uint16Array(64);
{
  const convertMantissa = (i: number): number => {
    let m = i << 13;
    let e = 0;
    while ((m & 0x00800000) === 0) {
      e -= 0x00800000;
      m <<= 1;
    }
    m &= ~0x00800000;
    e += 0x38800000;
    return (m | e) >>> 0;
  };
  mantissaTable[0] = 0;
  for (let i = 1; i < 1024; i++) mantissaTable[i] = convertMantissa(i);
  for (let i = 1024; i < 2048; i++) mantissaTable[i] = (0x38000000 + ((i - 1024) << 13)) >>> 0;
  exponentTable[0] = 0;
  for (let i = 1; i < 31; i++) exponentTable[i] = i << 23;
  exponentTable[31] = 0x47800000;
  exponentTable[32] = 0x80000000;
  for (let i = 33; i < 63; i++) exponentTable[i] = (0x80000000 + ((i - 32) << 23)) >>> 0;
  exponentTable[63] = 0xc7800000;
  for (let i = 0; i < 64; i++) offsetTable[i] = i === 0 || i === 32 ? 0 : 1024;
}

export function f16BitsToF32(h: number): number {
  const e = h >> 10;
  u32[0] = mantissaTable[offsetTable[e]! + (h & 0x3ff)]! + exponentTable[e]!;
  return f32[0]!;
}

export function f32ToF16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf / nan
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow -> inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow -> signed zero
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && (r & 1))) r++;
    return sign | r;
  }
  let r = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) r++; // may carry into exponent: correct
  return sign | r;
}

export function bf16BitsToF32(b: number): number {
  u32[0] = b << 16;
  return f32[0]!;
}

export function f32ToBf16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff)) return (x >>> 16) | 0x40; // keep nan
  const rounding = 0x7fff + ((x >>> 16) & 1);
  return ((x + rounding) >>> 16) & 0xffff;
}

export function f16ArrayToF32(src: Uint16Array, dst = new Float32Array(src.length)): Float32Array {
  const out = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) {
    const h = src[i]!;
    const e = h >> 10;
    out[i] = mantissaTable[offsetTable[e]! + (h & 0x3ff)]! + exponentTable[e]!;
  }
  return dst;
}

export function bf16ArrayToF32(src: Uint16Array, dst = new Float32Array(src.length)): Float32Array {
  const out = new Uint32Array(dst.buffer, dst.byteOffset, dst.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i]! << 16;
  return dst;
}

export function f32ArrayToF16(src: Float32Array, dst = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) dst[i] = f32ToF16Bits(src[i]!);
  return dst;
}

export function f32ArrayToBf16(src: Float32Array, dst = new Uint16Array(src.length)): Uint16Array {
  for (let i = 0; i < src.length; i++) dst[i] = f32ToBf16Bits(src[i]!);
  return dst;
}
