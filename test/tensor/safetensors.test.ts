import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RedlineError } from '../../src/errors.ts';
import { readSafetensors, SafetensorsFile, writeSafetensors } from '../../src/tensor/safetensors.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import { goldenPath } from '../helpers/golden.ts';

const dir = mkdtempSync(join(tmpdir(), 'redline-st-'));

/** Builds a file from a raw header object and a data section, bypassing the writer. */
function rawFile(name: string, header: unknown, data = Buffer.alloc(0), lengthOverride?: bigint): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  const p = join(dir, name);
  writeFileSync(p, Buffer.concat([len, json, data]));
  return p;
}

function expectInvalid(path: string, pattern: RegExp): void {
  let caught: unknown;
  try {
    SafetensorsFile.open(path);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(RedlineError);
  expect((caught as RedlineError).message).toMatch(pattern);
}

describe('safetensors', () => {
  it('round-trips tensors of every dtype with metadata', () => {
    const p = join(dir, 'rt.safetensors');
    const tensors = {
      a: Tensor.f32([1, -2.5, 3, 4e-8], [2, 2]),
      b: new Tensor('i64', [3], BigInt64Array.from([1n, -2n, 1n << 40n])),
      c: Tensor.f32([0.1, 65504, -1e-5]).to('f16'),
      d: Tensor.f32([0.1, 3e38, -1e-5]).to('bf16'),
      e: new Tensor('u8', [2], Uint8Array.from([7, 255])),
    };
    writeSafetensors(p, tensors, { format: 'pt', note: 'x' });
    const file = SafetensorsFile.open(p);
    expect(file.metadata).toEqual({ format: 'pt', note: 'x' });
    expect(file.keys().sort()).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(Array.from(file.getFloat32('a'))).toEqual(Array.from(Float32Array.from([1, -2.5, 3, 4e-8])));
    expect(Array.from(file.get('b').data as BigInt64Array)).toEqual([1n, -2n, 1n << 40n]);
    expect(file.info('c')).toMatchObject({ dtype: 'f16', shape: [3] });
    expect(Array.from(file.get('e').data as Uint8Array)).toEqual([7, 255]);
    // header is 8-byte aligned so tensor data can be mapped without copies
    expect(file.dataStart % 8).toBe(0);
    file.close();
  });

  it('converts f16 and bf16 exactly as torch rounds (reference bit patterns)', () => {
    // Bit patterns from the IEEE 754 binary16 / bfloat16 definitions.
    const f16 = Tensor.f32([1, -2, 0.333251953125, 65504, 1e-8, 5.960464477539063e-8, Infinity]).to('f16');
    expect(Array.from(f16.data as Uint16Array)).toEqual([0x3c00, 0xc000, 0x3555, 0x7bff, 0x0000, 0x0001, 0x7c00]);
    expect(Array.from(f16.toFloat32())).toEqual([1, -2, 0.333251953125, 65504, 0, 5.960464477539063e-8, Infinity]);
    const bf = Tensor.f32([1, -2, 3.140625, 1.00390625]).to('bf16');
    // 1.00390625 = 1 + 2^-8 lies exactly between two bf16 values: ties to even -> 1.0
    expect(Array.from(bf.data as Uint16Array)).toEqual([0x3f80, 0xc000, 0x4049, 0x3f80]);
  });

  it('reads the golden model files lazily', () => {
    const file = SafetensorsFile.open(goldenPath('models', 'sd15_tiny_original.safetensors'));
    const keys = file.keys();
    expect(keys.length).toBeGreaterThan(500);
    const k = keys.find((x) => x.endsWith('conv_in.weight'))!;
    const t = file.get(k);
    expect(t.shape).toEqual(file.info(k).shape);
    file.close();
  });

  it('refuses truncated, corrupt and hostile files with clear errors', () => {
    expectInvalid(rawFile('empty-header', '', Buffer.alloc(0), 0n), /not valid JSON/);
    writeFileSync(join(dir, 'tiny'), Buffer.from([1, 2, 3]));
    expectInvalid(join(dir, 'tiny'), /only 3 bytes/);
    expectInvalid(rawFile('huge-header', '{}', Buffer.alloc(0), 1n << 40n), /header claims/);
    expectInvalid(rawFile('past-end', '{}', Buffer.alloc(0), 4096n), /truncated/);
    expectInvalid(rawFile('badjson', '{"a": '), /not valid JSON/);
    expectInvalid(rawFile('array', '[1,2]'), /not a JSON object/);
    expectInvalid(rawFile('dtype', { a: { dtype: 'F99', shape: [1], data_offsets: [0, 4] } }, Buffer.alloc(4)), /unsupported dtype/);
    expectInvalid(rawFile('shape', { a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, Buffer.alloc(4)), /invalid shape/);
    expectInvalid(
      rawFile('absurd', { a: { dtype: 'F32', shape: [1e9, 1e9, 1e9], data_offsets: [0, 4] } }, Buffer.alloc(4)),
      /bytes of data/,
    );
    expectInvalid(rawFile('offsets', { a: { dtype: 'F32', shape: [1], data_offsets: [4, 0] } }, Buffer.alloc(4)), /invalid data_offsets/);
    expectInvalid(rawFile('beyond', { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, Buffer.alloc(8)), /truncated/);
    expectInvalid(
      rawFile(
        'overlap',
        {
          a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
          b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] },
        },
        Buffer.alloc(16),
      ),
      /overlap/,
    );
    expectInvalid(rawFile('meta', { __metadata__: { a: 1 } }), /not a string/);
  });

  it('names a missing file and a missing tensor', () => {
    expect(() => SafetensorsFile.open(join(dir, 'nope.safetensors'))).toThrow(/no such file/);
    const p = join(dir, 'one.safetensors');
    writeSafetensors(p, { x: Tensor.f32([1]) });
    expect(() => SafetensorsFile.open(p).get('y')).toThrow(/no tensor named "y"/);
    expect(readSafetensors(p).get('x')!.toFloat32()[0]).toBe(1);
    // the writer's bytes parse as JSON with the standard layout
    const buf = readFileSync(p);
    const n = Number(buf.readBigUInt64LE(0));
    expect(JSON.parse(buf.subarray(8, 8 + n).toString())).toEqual({ x: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } });
  });
});
