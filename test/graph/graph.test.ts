import { mkdtempSync, readdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { divDim, mulDim } from '../../src/graph/dims.ts';
import { Graph, GraphBuildError, type TensorSource } from '../../src/graph/graph.ts';
import * as op from '../../src/graph/ops.ts';
import { exportOnnx, writeOnnx } from '../../src/graph/onnx.ts';

const tmp = mkdtempSync(join(tmpdir(), 'redline-graph-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function source(data: Float32Array, shape: number[]): TensorSource {
  return { dtype: 'f32', shape, read: () => data };
}

async function run(model: Uint8Array | string, feeds: Record<string, [Float32Array, number[]]>): Promise<Record<string, ort.Tensor>> {
  const s = typeof model === 'string' ? await ort.InferenceSession.create(model) : await ort.InferenceSession.create(model);
  const inputs: Record<string, ort.Tensor> = {};
  for (const [k, [d, dims]] of Object.entries(feeds)) inputs[k] = new ort.Tensor('float32', d, dims);
  const out = await s.run(inputs);
  await s.release();
  return out;
}

describe('symbolic dims', () => {
  it('multiplies and divides monomials exactly', () => {
    expect(mulDim('height', 'width')).toBe('height*width');
    expect(divDim(mulDim('height', 'width'), 'width')).toBe('height');
    expect(divDim('height', 2)).toBe('height/2');
    expect(mulDim(divDim('height', 2)!, 2)).toBe('height');
    expect(divDim('height', 'width')).toBeUndefined();
    expect(divDim(7, 2)).toBeUndefined();
  });
});

describe('shape checks at build time', () => {
  it('rejects a conv whose weight expects other channels', () => {
    const g = new Graph();
    const x = g.input('x', 'f32', ['batch', 3, 'h', 'w']);
    const w = g.weight('w', source(new Float32Array(4 * 5 * 9), [4, 5, 3, 3]));
    expect(() => op.conv(x, w)).toThrow(GraphBuildError);
    expect(() => op.conv(x, w)).toThrow(/3 channels.*expects 5/);
  });
  it('rejects broadcasting unequal dims and bad reshapes', () => {
    const g = new Graph();
    const a = g.input('a', 'f32', [2, 3]);
    const b = g.input('b', 'f32', [4, 3]);
    expect(() => op.add(a, b)).toThrow(/cannot broadcast \[2, 3\] with \[4, 3\]/);
    expect(() => op.reshape(a, [4, -1])).toThrow(/not divisible/);
    const s = g.input('s', 'f32', ['h', 'w']);
    expect(() => op.add(s, op.transpose(s, [1, 0]))).toThrow(/cannot broadcast/);
  });
  it('tracks symbolic spatial sizes through stride-2 convs, reshapes and upsampling', () => {
    const g = new Graph();
    const x = g.input('x', 'f32', ['batch', 4, 'height', 'width']);
    const w = g.weight('w', source(new Float32Array(4 * 4 * 9), [4, 4, 3, 3]));
    const down = op.conv(x, w, null, { strides: [2, 2], pads: [1, 1, 1, 1] });
    expect(down.shape).toEqual(['batch', 4, 'height/2', 'width/2']);
    const flat = op.reshape(op.transpose(down, [0, 2, 3, 1]), [0, -1, 4]);
    expect(flat.shape).toEqual(['batch', 'height*width/4', 4]);
    const up = op.upsampleNearest(down);
    expect(up.shape).toEqual(['batch', 4, 'height', 'width']);
    expect(op.concat([up, x], 1).shape).toEqual(['batch', 8, 'height', 'width']);
  });
  it('rejects values of another graph', () => {
    const g1 = new Graph('one');
    const g2 = new Graph('two');
    const x = g1.input('x', 'f32', [1]);
    expect(() => g2.output('y', x)).toThrow(/belongs to graph 'one'/);
  });
});

describe('ONNX export runs in ORT with hand-computed results', () => {
  it('linear + silu', async () => {
    const g = new Graph('lin');
    const x = g.input('x', 'f32', ['batch', 3]);
    const w = g.weight('w', source(Float32Array.from([1, 2, 3, 4, 5, 6]), [2, 3]));
    const y = op.linear(x, w, op.constant(g, 'f32', [10, 20]));
    g.output('y', y);
    g.output('act', op.silu(y));
    const out = await run(exportOnnx(g), { x: [Float32Array.from([1, 0, 0, 0, 1, -1]), [2, 3]] });
    // rows: [1,0,0]·W^T + b = [11, 24]; [0,1,-1]·W^T + b = [2-3+10, 5-6+20] = [9, 19]
    expect([...(out.y!.data as Float32Array)]).toEqual([11, 24, 9, 19]);
    const silu = (v: number): number => v / (1 + Math.exp(-v));
    expect(out.act!.data[2]).toBeCloseTo(silu(9), 5);
  });

  it('conv, group norm, nearest upsampling', async () => {
    const g = new Graph('cnn');
    const x = g.input('x', 'f32', [1, 2, 'h', 'w']);
    // 1x1 conv swapping the two channels and adding 1
    const w = g.weight('w', source(Float32Array.from([0, 1, 1, 0]), [2, 2, 1, 1]));
    const c = op.conv(x, w, op.constant(g, 'f32', [1, 1]));
    g.output('conv', c);
    // group norm, 1 group: normalise all 8 values together, then gamma/beta per channel
    const gn = op.groupNorm(x, op.constant(g, 'f32', [2, 1]), op.constant(g, 'f32', [0, 5]), 1, 0);
    g.output('gn', gn);
    g.output('up', op.upsampleNearest(x));
    const xs = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8]);
    const out = await run(exportOnnx(g), { x: [xs, [1, 2, 2, 2]] });
    expect([...(out.conv!.data as Float32Array)]).toEqual([6, 7, 8, 9, 2, 3, 4, 5]);
    const mean = 4.5;
    const std = Math.sqrt(xs.reduce((a, v) => a + (v - mean) ** 2, 0) / 8);
    const gnv = out.gn!.data as Float32Array;
    expect(gnv[0]).toBeCloseTo((2 * (1 - mean)) / std, 5);
    expect(gnv[7]).toBeCloseTo((8 - mean) / std + 5, 5);
    expect(out.up!.dims).toEqual([1, 2, 4, 4]);
    expect([...(out.up!.data as Float32Array).slice(0, 8)]).toEqual([1, 1, 2, 2, 1, 1, 2, 2]);
  });

  it('MultiHeadAttention equals the plain MatMul/Softmax reference and a hand computation', async () => {
    const g = new Graph('attn');
    const q = g.input('q', 'f32', ['batch', 'seq', 4]);
    const k = g.input('k', 'f32', ['batch', 'kv', 4]);
    const v = g.input('v', 'f32', ['batch', 'kv', 4]);
    g.output('mha', op.multiHeadAttention(q, k, v, 2));
    g.output('ref', op.attentionReference(q, k, v, 2));
    const qd = Float32Array.from([1, 0, 0, 1, 0.5, -1, 2, 0]);
    const kd = Float32Array.from([1, 1, 0, 0, 0, 2, 1, -1, 3, 0, 0, 1]);
    const vd = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    const out = await run(exportOnnx(g), { q: [qd, [1, 2, 4]], k: [kd, [1, 3, 4]], v: [vd, [1, 3, 4]] });
    // head 0 of query 0: q=[1,0], keys [1,1],[0,2],[3,0]; scores/sqrt(2) = [1,0,3]/√2
    const s = [1, 0, 3].map((t) => Math.exp(t / Math.SQRT2));
    const z = s[0]! + s[1]! + s[2]!;
    const expected0 = (s[0]! * 1 + s[1]! * 5 + s[2]! * 9) / z;
    const mha = out.mha!.data as Float32Array;
    expect(mha[0]).toBeCloseTo(expected0, 5);
    const ref = out.ref!.data as Float32Array;
    for (let i = 0; i < mha.length; i++) expect(mha[i]).toBeCloseTo(ref[i]!, 5);
  });

  it('external data: copied, linked by path, and stored as f16', async () => {
    const values = new Float32Array(2048).map((_, i) => i * 0.25);
    const rawPath = join(tmp, 'raw.bin');
    writeFileSync(rawPath, Buffer.concat([Buffer.alloc(24, 7), Buffer.from(values.buffer)]));
    const g = new Graph('ext');
    const x = g.input('x', 'f32', [2048]);
    const copied = g.weight('copied', source(values, [2048]));
    const linked = g.weight('linked', { dtype: 'f32', shape: [2048], read: () => values, file: { path: rawPath, offset: 24, length: 8192 } });
    g.output('y', op.add(op.add(x, copied), op.mul(linked, 2)));
    const res = writeOnnx(g, join(tmp, 'ext'));
    expect(res.linkedWeights).toBe(1);
    expect(res.dataBytes).toBe(8192);
    const out = await run(res.modelPath, { x: [new Float32Array(2048).fill(1), [2048]] });
    const y = out.y!.data as Float32Array;
    expect(y[0]).toBe(1);
    expect(y[2047]).toBe(1 + 3 * 2047 * 0.25);

    // ORT resolves symlinks and refuses data outside the model folder: hence hard links
    const linkName = readdirSync(join(tmp, 'ext')).find((f) => f.startsWith('model.onnx.src0'))!;
    unlinkSync(join(tmp, 'ext', linkName));
    symlinkSync(rawPath, join(tmp, 'ext', linkName));
    await expect(run(res.modelPath, { x: [new Float32Array(2048), [2048]] })).rejects.toThrow(/escapes model directory/);

    const copiedDir = writeOnnx(g, join(tmp, 'copied'), { linkSourceFiles: false });
    expect(copiedDir.linkedWeights).toBe(0);
    expect(copiedDir.dataBytes).toBe(8192 + 8192);
    expect(((await run(copiedDir.modelPath, { x: [new Float32Array(2048), [2048]] })).y!.data as Float32Array)[4]).toBe(3);

    const g16 = new Graph('ext16');
    const x16 = g16.input('x', 'f32', [2048]);
    g16.output('y', op.add(x16, g16.weight('w', source(values, [2048]))));
    const res16 = writeOnnx(g16, join(tmp, 'f16'), { weightsAsF16: true });
    expect(res16.dataBytes).toBe(4096);
    const y16 = (await run(res16.modelPath, { x: [new Float32Array(2048), [2048]] })).y!.data as Float32Array;
    expect(y16[1001]).toBe(1001 * 0.25); // multiples of 1/4 below 2048 are exact in f16
  });

  it('refuses to embed more than 2 GB', () => {
    const g = new Graph('huge');
    const x = g.input('x', 'f32', [1]);
    const huge = g.weight('huge', { dtype: 'f32', shape: [2 ** 29 + 1], read: () => new Float32Array(0) });
    g.output('y', op.mul(x, op.reshape(op.slice(huge, [0], [1], [0]), [1])));
    expect(() => exportOnnx(g)).toThrow(/more than 2 GB.*writeOnnx/);
  });
});
