/** Element types Redline handles, named as in the safetensors header (lower case). */
export type DType = 'f32' | 'f16' | 'bf16' | 'f64' | 'i64' | 'i32' | 'i16' | 'i8' | 'u8' | 'bool';

export type TypedArrayFor<D extends DType> = D extends 'f32'
  ? Float32Array
  : D extends 'f64'
    ? Float64Array
    : D extends 'f16' | 'bf16'
      ? Uint16Array // raw bit patterns; convert with half.ts
      : D extends 'i64'
        ? BigInt64Array
        : D extends 'i32'
          ? Int32Array
          : D extends 'i16'
            ? Int16Array
            : D extends 'i8'
              ? Int8Array
              : Uint8Array;

export type AnyTypedArray =
  | Float32Array
  | Float64Array
  | Uint16Array
  | BigInt64Array
  | Int32Array
  | Int16Array
  | Int8Array
  | Uint8Array;

export const BYTES_PER_ELEMENT: Record<DType, number> = {
  f32: 4, f16: 2, bf16: 2, f64: 8, i64: 8, i32: 4, i16: 2, i8: 1, u8: 1, bool: 1,
};

/** safetensors header dtype strings <-> DType. */
export const SAFETENSORS_DTYPES: Record<string, DType> = {
  F32: 'f32', F16: 'f16', BF16: 'bf16', F64: 'f64', I64: 'i64', I32: 'i32', I16: 'i16', I8: 'i8', U8: 'u8', BOOL: 'bool',
};

export function safetensorsDtypeName(dtype: DType): string {
  for (const [name, d] of Object.entries(SAFETENSORS_DTYPES)) if (d === dtype) return name;
  throw new Error(`no safetensors name for dtype ${dtype}`);
}

export function isFloatDtype(dtype: DType): boolean {
  return dtype === 'f32' || dtype === 'f16' || dtype === 'bf16' || dtype === 'f64';
}

/** A typed-array view of `bytes` (copied when unaligned, since typed arrays need alignment). */
export function viewAs(dtype: DType, bytes: Uint8Array): AnyTypedArray {
  const size = BYTES_PER_ELEMENT[dtype];
  let buf = bytes;
  if (buf.byteOffset % size !== 0) buf = new Uint8Array(bytes); // copy realigns at offset 0
  const n = buf.byteLength / size;
  switch (dtype) {
    case 'f32': return new Float32Array(buf.buffer, buf.byteOffset, n);
    case 'f64': return new Float64Array(buf.buffer, buf.byteOffset, n);
    case 'f16':
    case 'bf16': return new Uint16Array(buf.buffer, buf.byteOffset, n);
    case 'i64': return new BigInt64Array(buf.buffer, buf.byteOffset, n);
    case 'i32': return new Int32Array(buf.buffer, buf.byteOffset, n);
    case 'i16': return new Int16Array(buf.buffer, buf.byteOffset, n);
    case 'i8': return new Int8Array(buf.buffer, buf.byteOffset, n);
    case 'u8':
    case 'bool': return new Uint8Array(buf.buffer, buf.byteOffset, n);
  }
}

export function allocate(dtype: DType, n: number): AnyTypedArray {
  return viewAs(dtype, new Uint8Array(n * BYTES_PER_ELEMENT[dtype]));
}
