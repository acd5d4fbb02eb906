import { allocate, type AnyTypedArray, BYTES_PER_ELEMENT, type DType } from './dtype.ts';
import { bf16ArrayToF32, f16ArrayToF32, f32ArrayToBf16, f32ArrayToF16 } from './half.ts';

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * A dense row-major tensor on the CPU. f16/bf16 data are raw bit patterns in a
 * Uint16Array; toFloat32() widens them.
 */
export class Tensor {
  constructor(
    readonly dtype: DType,
    readonly shape: readonly number[],
    readonly data: AnyTypedArray,
  ) {
    const n = numel(shape);
    if (data.length !== n) {
      throw new Error(`tensor data has ${data.length} elements but shape [${shape.join(', ')}] needs ${n}`);
    }
  }

  static zeros(dtype: DType, shape: readonly number[]): Tensor {
    return new Tensor(dtype, shape, allocate(dtype, numel(shape)));
  }

  static f32(data: Float32Array | number[], shape: readonly number[] = [data.length]): Tensor {
    return new Tensor('f32', shape, data instanceof Float32Array ? data : Float32Array.from(data));
  }

  get numel(): number {
    return this.data.length;
  }

  get byteLength(): number {
    return this.data.length * BYTES_PER_ELEMENT[this.dtype];
  }

  /** Raw little-endian bytes (a view, no copy). */
  bytes(): Uint8Array {
    return new Uint8Array(this.data.buffer, this.data.byteOffset, this.byteLength);
  }

  reshape(shape: readonly number[]): Tensor {
    return new Tensor(this.dtype, shape, this.data);
  }

  /** Float32 values; for f32 tensors this is the data itself (no copy). */
  toFloat32(): Float32Array {
    const d = this.data;
    switch (this.dtype) {
      case 'f32': return d as Float32Array;
      case 'f16': return f16ArrayToF32(d as Uint16Array);
      case 'bf16': return bf16ArrayToF32(d as Uint16Array);
      case 'i64': return Float32Array.from(d as BigInt64Array, (v) => Number(v));
      default: return Float32Array.from(d as ArrayLike<number>);
    }
  }

  /** Convert to another float dtype (f32, f16, bf16). */
  to(dtype: 'f32' | 'f16' | 'bf16'): Tensor {
    if (dtype === this.dtype) return this;
    const f = this.toFloat32();
    if (dtype === 'f32') return new Tensor('f32', this.shape, f);
    return new Tensor(dtype, this.shape, dtype === 'f16' ? f32ArrayToF16(f) : f32ArrayToBf16(f));
  }
}
