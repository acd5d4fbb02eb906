// safetensors: an 8-byte little-endian header length, a JSON header mapping names to
// {dtype, shape, data_offsets: [begin, end]} (offsets relative to the end of the header)
// plus an optional "__metadata__" string map, then the raw tensor bytes.
//
// Files are untrusted (downloaded LoRAs and checkpoints): every header field is checked
// before anything is allocated, and tensors are read on demand with positioned reads, so
// a multi-GB checkpoint is never copied whole into memory.
import { closeSync, fstatSync, openSync, readSync, writeSync } from 'node:fs';
import { RedlineError } from '../errors.ts';
import { BYTES_PER_ELEMENT, type DType, SAFETENSORS_DTYPES, safetensorsDtypeName, viewAs } from './dtype.ts';
import { numel, Tensor } from './tensor.ts';

/** Headers of real SD checkpoints are ~100 KB; 100 MB is the safetensors crate's own cap. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
const MAX_RANK = 8;

export interface TensorInfo {
  dtype: DType;
  shape: number[];
  /** Absolute byte offset in the file. */
  offset: number;
  byteLength: number;
}

function bad(path: string, what: string): RedlineError {
  return new RedlineError(
    'safetensors_invalid',
    `${path} is not a valid safetensors file: ${what}.`,
    'The file may be truncated or corrupt; download or export it again.',
  );
}

function parseHeader(path: string, json: string, dataStart: number, fileSize: number): {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
} {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch {
    throw bad(path, 'its header is not valid JSON');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad(path, 'its header is not a JSON object');
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  const dataSize = fileSize - dataStart;
  const ranges: Array<[number, number, string]> = [];
  for (const [name, entry] of Object.entries(raw as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw bad(path, '__metadata__ is not an object');
      metadata = {};
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== 'string') throw bad(path, `__metadata__ value for "${k}" is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    if (typeof entry !== 'object' || entry === null) throw bad(path, `entry "${name}" is not an object`);
    const { dtype, shape, data_offsets } = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dt = typeof dtype === 'string' ? SAFETENSORS_DTYPES[dtype] : undefined;
    if (!dt) throw bad(path, `tensor "${name}" has unsupported dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || shape.length > MAX_RANK || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw bad(path, `tensor "${name}" has an invalid shape ${JSON.stringify(shape)}`);
    }
    if (
      !Array.isArray(data_offsets) ||
      data_offsets.length !== 2 ||
      !data_offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      data_offsets[0] > data_offsets[1]
    ) {
      throw bad(path, `tensor "${name}" has invalid data_offsets ${JSON.stringify(data_offsets)}`);
    }
    const [begin, end] = data_offsets as [number, number];
    // numel can overflow for absurd shapes: compare in floating point before trusting it.
    const expected = (shape as number[]).reduce((a, d) => a * d, 1) * BYTES_PER_ELEMENT[dt];
    if (expected !== end - begin) {
      throw bad(path, `tensor "${name}" has shape [${shape.join(', ')}] (${expected} bytes) but ${end - begin} bytes of data`);
    }
    if (end > dataSize) {
      throw bad(path, `tensor "${name}" ends at byte ${end} of the data section, which has only ${dataSize} bytes (truncated file?)`);
    }
    ranges.push([begin, end, name]);
    tensors.set(name, { dtype: dt, shape: shape as number[], offset: dataStart + begin, byteLength: end - begin });
  }
  ranges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  // Sorted by start: a range overlaps an earlier one iff it starts before the furthest end so far.
  let furthest: [number, number, string] | null = null;
  for (const cur of ranges) {
    if (cur[1] === cur[0]) continue; // empty tensors occupy no bytes
    if (furthest && cur[0] < furthest[1]) throw bad(path, `tensors "${furthest[2]}" and "${cur[2]}" overlap`);
    if (!furthest || cur[1] > furthest[1]) furthest = cur;
  }
  return { tensors, metadata };
}

export class SafetensorsFile {
  private fd: number | null;

  private constructor(
    readonly path: string,
    fd: number,
    readonly size: number,
    private readonly tensors: Map<string, TensorInfo>,
    readonly metadata: Record<string, string>,
    /** Byte offset where tensor data begins (8 + header length). */
    readonly dataStart: number,
  ) {
    this.fd = fd;
  }

  /** Reads and validates the header only. */
  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new RedlineError('file_not_found', `cannot open ${path}: ${code === 'ENOENT' ? 'no such file' : code}.`);
    }
    try {
      const size = fstatSync(fd).size;
      if (size < 8) throw bad(path, `it has only ${size} bytes`);
      const lenBuf = Buffer.alloc(8);
      readSync(fd, lenBuf, 0, 8, 0);
      const headerLen = lenBuf.readBigUInt64LE(0);
      if (headerLen > BigInt(MAX_HEADER_BYTES)) throw bad(path, `its header claims ${headerLen} bytes (limit ${MAX_HEADER_BYTES})`);
      const n = Number(headerLen);
      if (8 + n > size) throw bad(path, `its header claims ${n} bytes but the file has only ${size - 8} after the length field (truncated?)`);
      const headerBuf = Buffer.alloc(n);
      readSync(fd, headerBuf, 0, n, 8);
      const { tensors, metadata } = parseHeader(path, headerBuf.toString('utf8'), 8 + n, size);
      return new SafetensorsFile(path, fd, size, tensors, metadata, 8 + n);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  keys(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new RedlineError('tensor_missing', `${this.path} has no tensor named "${name}".`);
    return info;
  }

  /** Raw bytes of one tensor, read from disk now. */
  readBytes(name: string): Uint8Array {
    if (this.fd === null) throw new Error(`${this.path} was closed`);
    const info = this.info(name);
    const out = new Uint8Array(info.byteLength);
    let done = 0;
    while (done < out.length) {
      const n = readSync(this.fd, out, done, out.length - done, info.offset + done);
      if (n === 0) throw bad(this.path, `unexpected end of file reading "${name}"`);
      done += n;
    }
    return out;
  }

  get(name: string): Tensor {
    const info = this.info(name);
    return new Tensor(info.dtype, info.shape, viewAs(info.dtype, this.readBytes(name)));
  }

  getFloat32(name: string): Float32Array {
    return this.get(name).toFloat32();
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

/** Reads every tensor of a (small) file. Use SafetensorsFile for large ones. */
export function readSafetensors(path: string): Map<string, Tensor> {
  const file = SafetensorsFile.open(path);
  try {
    return new Map(file.keys().map((k) => [k, file.get(k)]));
  } finally {
    file.close();
  }
}

export type TensorMap = Map<string, Tensor> | Record<string, Tensor>;

/**
 * Writes tensors in sorted name order (as the reference implementation does), 8-byte
 * aligned header, streaming each tensor's bytes so nothing is concatenated in memory.
 */
export function writeSafetensors(path: string, tensors: TensorMap, metadata?: Record<string, string>): void {
  const entries = (tensors instanceof Map ? [...tensors.entries()] : Object.entries(tensors)).sort((a, b) =>
    a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0,
  );
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of entries) {
    if (numel(t.shape) !== t.data.length) throw new Error(`tensor ${name}: shape does not match data`);
    header[name] = { dtype: safetensorsDtypeName(t.dtype), shape: t.shape, data_offsets: [offset, offset + t.byteLength] };
    offset += t.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(headerBytes.length));
  const fd = openSync(path, 'w');
  try {
    writeSync(fd, len);
    writeSync(fd, headerBytes);
    for (const [, t] of entries) writeSync(fd, t.bytes());
  } finally {
    closeSync(fd);
  }
}
