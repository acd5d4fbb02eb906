// Every op's gradient against central finite differences: a tiny graph per op, loss =
// sum(y * r) accumulated in float64 with a fixed random r, analytic gradients from
// gradients() and the numeric ones from perturbed runs of the same ONNX model in ORT.
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { gradients } from '../../src/graph/autodiff.ts';
import { Graph, type Node, type Value } from '../../src/graph/graph.ts';
import * as op from '../../src/graph/ops.ts';
import { upsampleConv3x3 } from '../../src/models/vae.ts';
import { exportOnnx } from '../../src/graph/onnx.ts';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

interface Case {
  /** shapes of the differentiated inputs */
  inputs: number[][];
  build(g: Graph, xs: Value[]): Value;
  /** input data generator (default uniform in [-1, 1]) */
  init?: (i: number, n: number, r: () => number) => Float32Array;
  checkpoint?: (node: Node) => string | undefined;
  /** finite-difference step (float32 forward) */
  h?: number;
  /** declared (symbolic) input shapes; `inputs` are then the run-time shapes */
  declared?: (number | string)[][];
}

async function checkCase(c: Case, seed = 1): Promise<{ worst: number; graph: Graph }> {
  const r = rng(seed);
  const g = new Graph('grad_check');
  const xs = c.inputs.map((s, i) => g.input(`x${i}`, 'f32', c.declared?.[i] ?? s));
  const y = c.build(g, xs);
  // the projection weights are a second input, sized from the run-time output shape
  const proj = g.input('proj', 'f64', y.shape);
  const loss = op.reduceSum(op.mul(op.cast(y, 'f64'), proj), y.shape.map((_, i) => i), false);
  g.output('loss', loss);
  const grads = gradients(loss, xs, c.checkpoint ? { checkpoint: c.checkpoint } : {});
  grads.forEach((d, i) => g.output(`grad${i}`, d));
  const session = await ort.InferenceSession.create(exportOnnx(g));
  const data = c.inputs.map((s, i) => {
    const len = s.reduce((a, b) => a * b, 1);
    return c.init ? c.init(i, len, r) : Float32Array.from({ length: len }, () => r() * 2 - 1);
  });
  const yDims = await outputDims(c, data);
  const weights = Float64Array.from({ length: yDims.reduce((a, b) => a * b, 1) }, () => r() * 2 - 1);
  const feeds = (): Record<string, ort.Tensor> => ({
    ...Object.fromEntries(data.map((d, i) => [`x${i}`, new ort.Tensor('float32', d, c.inputs[i]!)])),
    proj: new ort.Tensor('float64', weights, yDims),
  });
  const out = await session.run(feeds());
  const h = c.h ?? 1e-2;
  let worst = 0;
  for (let i = 0; i < data.length; i++) {
    const an = out[`grad${i}`]!.data as Float32Array;
    expect(an.length).toBe(data[i]!.length);
    let scale = 0;
    for (const v of an) scale = Math.max(scale, Math.abs(v));
    const picks = new Set<number>();
    while (picks.size < Math.min(6, an.length)) picks.add(Math.floor(r() * an.length));
    for (const j of picks) {
      const x0 = data[i]![j]!;
      data[i]![j] = x0 + h;
      const lp = Number((await session.run(feeds(), ['loss'])).loss!.data[0]);
      data[i]![j] = x0 - h;
      const lm = Number((await session.run(feeds(), ['loss'])).loss!.data[0]);
      data[i]![j] = x0;
      const fd = (lp - lm) / (2 * h);
      const err = Math.abs(fd - an[j]!) / (scale + 1e-3);
      worst = Math.max(worst, err);
    }
  }
  await session.release();
  return { worst, graph: g };
}

/** Run-time shape of the case's output (a forward-only copy of the graph). */
async function outputDims(c: Case, data: Float32Array[]): Promise<number[]> {
  const g = new Graph('shape_probe');
  const xs = c.inputs.map((s, i) => g.input(`x${i}`, 'f32', c.declared?.[i] ?? s));
  g.output('y', c.build(g, xs));
  const s = await ort.InferenceSession.create(exportOnnx(g));
  const out = await s.run(Object.fromEntries(data.map((d, i) => [`x${i}`, new ort.Tensor('float32', d, c.inputs[i]!)])));
  await s.release();
  return [...out.y!.dims];
}

const positive = (_i: number, n: number, r: () => number): Float32Array => Float32Array.from({ length: n }, () => 0.5 + r());

const cases: Record<string, Case> = {
  'Add with broadcasting': { inputs: [[2, 3, 4], [4]], build: (_g, [a, b]) => op.add(a!, b!) },
  'Sub with broadcasting': { inputs: [[2, 1, 4], [3, 1]], build: (_g, [a, b]) => op.sub(a!, b!) },
  'Mul with broadcasting': { inputs: [[2, 3, 4], [2, 1, 1]], build: (_g, [a, b]) => op.mul(a!, b!) },
  'Div with broadcasting': { inputs: [[2, 3], [3]], build: (_g, [a, b]) => op.div(a!, b!), init: (i, n, r) => (i === 1 ? positive(i, n, r) : Float32Array.from({ length: n }, () => r() - 0.5)) },
  'Pow by a constant': { inputs: [[6]], build: (_g, [a]) => op.pow(a!, 3), init: positive },
  'MatMul batched': { inputs: [[2, 3, 4], [2, 4, 5]], build: (_g, [a, b]) => op.matmul(a!, b!) },
  'MatMul with a shared 2-D weight': { inputs: [[2, 3, 4], [4, 5]], build: (_g, [a, b]) => op.matmul(a!, b!) },
  'Gemm (linear on 2-D input)': { inputs: [[3, 4], [5, 4], [5]], build: (_g, [x, w, b]) => op.linear(x!, w!, b!) },
  'Gemm transA, alpha, beta': { inputs: [[4, 3], [4, 5], [3, 5]], build: (_g, [a, b, c]) => op.gemm(a!, b!, c!, { transA: true, alpha: 0.7, beta: 1.3 }) },
  'linear on 3-D input': { inputs: [[2, 3, 4], [5, 4], [5]], build: (_g, [x, w, b]) => op.linear(x!, w!, b!) },
  'Conv 3x3 pad 1': { inputs: [[2, 3, 5, 5], [4, 3, 3, 3], [4]], build: (_g, [x, w, b]) => op.conv(x!, w!, b!, { pads: [1, 1, 1, 1] }) },
  'Conv 3x3 stride 2 (even size)': { inputs: [[1, 2, 6, 6], [3, 2, 3, 3], [3]], build: (_g, [x, w, b]) => op.conv(x!, w!, b!, { strides: [2, 2], pads: [1, 1, 1, 1] }) },
  'Conv 3x3 stride 2 (odd size, VAE-style asymmetric pad)': { inputs: [[1, 2, 7, 7], [3, 2, 3, 3]], build: (_g, [x, w]) => op.conv(x!, w!, null, { strides: [2, 2], pads: [0, 0, 1, 1] }) },
  'Conv 1x1': { inputs: [[2, 4, 3, 3], [5, 4, 1, 1], [5]], build: (_g, [x, w, b]) => op.conv(x!, w!, b!) },
  'Reshape/Transpose': { inputs: [[2, 3, 4]], build: (_g, [x]) => op.transpose(op.reshape(x!, [0, 2, 6]), [2, 0, 1]) },
  'Concat/Slice/Split': {
    inputs: [[2, 3], [2, 2]],
    build: (_g, [a, b]) => {
      const c = op.concat([a!, b!], 1);
      const [p, q] = op.split(c, 1, [2, 3]);
      return op.add(op.slice(c, [1], [4], [1]), op.concat([q!, op.slice(p!, [0], [0], [1])], 1));
    },
  },
  'Unsqueeze/Squeeze/Expand': {
    inputs: [[3, 1]],
    build: (g, [x]) => op.unsqueeze(op.expand(op.squeeze(x!, [1]), op.i64s(g, [2, 3]), [2, 3]), [0]),
  },
  'Gather (embedding table)': {
    inputs: [[6, 3]],
    build: (g, [t]) => op.gather(t!, op.constant(g, 'i64', [1, 4, 1, 0, 5], [5])),
  },
  'Softmax': { inputs: [[2, 5]], build: (_g, [x]) => op.softmax(x!, -1) },
  'LayerNormalization': { inputs: [[2, 3, 6], [6], [6]], build: (_g, [x, s, b]) => op.layerNorm(x!, s!, b!, 1e-5) },
  'InstanceNormalization': { inputs: [[2, 3, 4, 2], [3], [3]], build: (_g, [x, s, b]) => op.instanceNorm(x!, s!, b!, 1e-5) },
  'GroupNorm (reshape + instance norm + affine)': { inputs: [[2, 4, 3, 3], [4], [4]], build: (_g, [x, s, b]) => op.groupNorm(x!, s!, b!, 2, 1e-6) },
  'Sigmoid, SiLU, quick_gelu, Tanh': { inputs: [[8]], build: (_g, [x]) => op.add(op.add(op.silu(x!), op.quickGelu(x!)), op.tanh(op.mul(x!, 2))) },
  'Gelu (erf) and Gelu (tanh)': { inputs: [[8]], build: (_g, [x]) => op.add(op.gelu(x!), op.mul(op.gelu(x!, 'tanh'), 0.5)) },
  'Exp, Sqrt, Erf, Sin, Cos, Reciprocal': { inputs: [[6]], init: positive, build: (_g, [x]) => op.add(op.add(op.exp(x!), op.sqrt(x!)), op.add(op.erf(x!), op.add(op.sin(x!), op.add(op.cos(x!), op.reciprocal(x!))))) },
  'ReduceMean/ReduceSum': { inputs: [[2, 3, 4]], build: (_g, [x]) => op.add(op.reduceMean(x!, [1, 2], true), op.unsqueeze(op.reduceSum(x!, [2], false), [2])) },
  'Resize nearest x2': { inputs: [[1, 2, 3, 3]], build: (_g, [x]) => op.upsampleNearest(x!, 2) },
  'Resize nearest to a reference size': {
    inputs: [[1, 2, 2, 3], [1, 1, 4, 6]],
    build: (_g, [x, like]) => op.add(op.upsampleNearestTo(x!, like!), like!),
  },
  'DepthToSpace (DCR) and the VAE upsampler built on it': {
    inputs: [[1, 8, 3, 2], [2, 2, 3, 3], [2]],
    build: (_g, [x, w, b]) => op.add(op.depthToSpace(x!, 2), upsampleConv3x3(op.slice(x!, [0], [2], [1]), w!, b!)),
  },
  'Where': { inputs: [[6], [1]], build: (g, [a, b]) => op.where(op.less(op.constant(g, 'f32', [1, 0, 1, 0, 0, 1]), 0.5), a!, b!) },
  'MultiHeadAttention (self, 2 heads)': { inputs: [[2, 3, 8], [2, 3, 8], [2, 3, 8]], build: (_g, [q, k, v]) => op.multiHeadAttention(q!, k!, v!, 2) },
  'MultiHeadAttention (cross, with causal-style bias)': {
    inputs: [[1, 3, 4], [1, 5, 4], [1, 5, 4]],
    build: (g, [q, k, v]) => {
      const bias = op.constant(g, 'f32', Array.from({ length: 15 }, (_, i) => (i % 5 > (i / 5 | 0) + 2 ? -1e9 : 0)), [1, 1, 3, 5]);
      return op.multiHeadAttention(q!, k!, v!, 1, { attentionBias: bias });
    },
  },
  'symbolic batch/height/width: stride-2 conv, group norm, resize to the skip size, attention, spatial mean': {
    inputs: [[2, 4, 6, 6], [8, 4, 3, 3]],
    declared: [['batch', 4, 'height', 'width'], [8, 4, 3, 3]],
    build: (g, [x, w]) => {
      const gamma = op.constant(g, 'f32', [1, 0.5, 2, 1, 1, 1, 1, 0.7]);
      const beta = op.constant(g, 'f32', [0, 0.1, 0, -0.1, 0, 0, 0, 0]);
      const h = op.silu(op.groupNorm(op.conv(x!, w!, null, { strides: [2, 2], pads: [1, 1, 1, 1] }), gamma, beta, 2));
      const up = op.slice(op.upsampleNearestTo(h, x!), [0], [4], [1]);
      const tokens = op.reshape(op.transpose(x!, [0, 2, 3, 1]), [0, -1, 4]);
      const att = op.reshapeLike(op.transpose(op.multiHeadAttention(tokens, tokens, tokens, 2), [0, 2, 1]), x!);
      return op.add(op.add(up, att), op.reduceMean(x!, [2, 3], true));
    },
  },
  'attentionReference (MatMul/Softmax)': { inputs: [[1, 4, 8], [1, 4, 8], [1, 4, 8]], build: (_g, [q, k, v]) => op.attentionReference(q!, k!, v!, 2) },
};

describe('gradients match central finite differences', () => {
  it.each(Object.keys(cases))('%s', async (name) => {
    const { worst } = await checkCase(cases[name]!);
    expect(worst).toBeLessThan(1e-3);
  });
});

describe('gradient checkpointing', () => {
  const build = (_g: Graph, [x, w]: Value[]): Value => {
    let h = x!;
    const g = w!.graph;
    const gamma = op.constant(g, 'f32', [1, 0.5, 2, 1]);
    const beta = op.constant(g, 'f32', [0, 0.1, 0, -0.1]);
    for (let i = 0; i < 3; i++) h = op.silu(op.groupNorm(op.conv(h, w!, null, { pads: [1, 1, 1, 1] }), gamma, beta, 2));
    return h;
  };
  it('recomputes the chosen segments and gives the same gradients', async () => {
    const shapes = [[1, 4, 4, 4], [4, 4, 3, 3]];
    let seen = 0;
    const plain = await checkCase({ inputs: shapes, build });
    const cp = await checkCase({ inputs: shapes, build, checkpoint: (n) => (n.opType === 'Sigmoid' || n.opType === 'InstanceNormalization' || n.opType === 'Mul' ? (seen++, 'block') : undefined) });
    expect(seen).toBeGreaterThan(0);
    expect(plain.worst).toBeLessThan(1e-3);
    expect(cp.worst).toBeLessThan(1e-3);
    // the recomputation really happened: more Sigmoid nodes than the forward has
    const sig = (g: Graph): number => g.nodes.filter((n) => n.opType === 'Sigmoid').length;
    expect(sig(cp.graph)).toBeGreaterThan(sig(plain.graph));
  });
});

describe('errors', () => {
  it('refuses a non-scalar loss and ops without a rule', () => {
    const g = new Graph();
    const x = g.input('x', 'f32', [2]);
    expect(() => gradients(op.mul(x, 2), [x])).toThrow(/exactly one element/);
    const y = g.addNode('Round', [x], [{ dtype: 'f32', shape: [2] }])[0]!;
    expect(() => gradients(op.reduceSum(y, [0], false), [x])).toThrow(/Round.*no gradient rule/);
  });
});
