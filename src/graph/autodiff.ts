// Reverse-mode autodiff on the graph IR. `gradients(loss, params)` walks the forward nodes
// backwards and appends gradient nodes built with the same op functions as the model (so
// every gradient is shape-checked at build time); the result is one ONNX graph that computes
// loss and gradients in a single ORT run, on any provider (only standard ONNX ops plus the
// com.microsoft ops the forward already uses).
//
// Design choices:
// - com.microsoft.MultiHeadAttention has no gradient kernel. Its backward recomputes the
//   attention matrix from q and k with plain MatMul/Softmax (flash-attention style): the
//   forward keeps the fused kernel and no [B, H, S, L] matrix is held between passes.
// - Broadcasting binary ops reduce-sum the gradient back to each operand's shape.
// - Gradient checkpointing: `checkpoint(node)` names a segment (e.g. 'down_blocks.1'); the
//   activations inside a segment are recomputed in the backward pass from the segment's
//   inputs. The recomputation is made to depend on the incoming gradient (x + 0*sum(dy)) so
//   ORT cannot schedule it early, which would keep the activations alive after all.

import { isFloatDtype, type AnyTypedArray } from '../tensor/dtype.ts';
import { divDim, formatShape, isSymbolic, productDims, type Dim } from './dims.ts';
import { attr, GraphBuildError, type Graph, type Node, type Value } from './graph.ts';
import * as op from './ops.ts';

export interface GradientOptions {
  /** Segment name for forward nodes whose activations are recomputed in the backward pass
   * (undefined: keep the node's activations). Nodes of one segment should be contiguous. */
  checkpoint?: (node: Node) => string | undefined;
}

type Grads = (Value | null)[];

interface Ctx {
  g: Graph;
  /** The forward value as seen from the backward pass (a recomputed copy inside a
   * checkpointed segment). */
  fwd(v: Value): Value;
  constData(v: Value | null, what: string): number[];
}

function fail(node: Node, msg: string): never {
  throw new GraphBuildError(`autodiff: ${node.opType} (${node.name}): ${msg}`);
}

const range = (n: number, from = 0): number[] => Array.from({ length: n - from }, (_, i) => i + from);

function sameShape(a: readonly Dim[], b: readonly Dim[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Reduce-sums a broadcast gradient back to `shape` (numpy broadcasting in reverse). */
export function sumToShape(gy: Value, shape: readonly Dim[]): Value {
  let r = gy;
  const lead = r.rank - shape.length;
  if (lead < 0) throw new GraphBuildError(`autodiff: gradient ${gy} has lower rank than its operand ${formatShape(shape)}`);
  if (lead > 0) r = op.reduceSum(r, range(lead), false);
  const axes = range(shape.length).filter((i) => shape[i] === 1 && r.shape[i] !== 1);
  if (axes.length) r = op.reduceSum(r, axes, true);
  if (!sameShape(r.shape, shape)) throw new GraphBuildError(`autodiff: cannot reduce gradient ${gy} to ${formatShape(shape)}`);
  return r;
}

function swapLast(v: Value): Value {
  const r = v.rank;
  return op.transpose(v, [...range(r - 2), r - 1, r - 2]);
}

function attrInt(node: Node, name: string, dflt: number): number {
  const a = node.attrs[name];
  return a && a.kind === 'int' ? a.value : dflt;
}
function attrFloat(node: Node, name: string, dflt: number): number {
  const a = node.attrs[name];
  return a && a.kind === 'float' ? a.value : dflt;
}
function attrInts(node: Node, name: string): readonly number[] | undefined {
  const a = node.attrs[name];
  return a && a.kind === 'ints' ? a.value : undefined;
}
function attrString(node: Node, name: string, dflt: string): string {
  const a = node.attrs[name];
  return a && a.kind === 'string' ? a.value : dflt;
}

/** 1 / (elements of `big` / elements of `small`), computed at run time (symbolic sizes). */
function inverseCount(g: Graph, big: Value, small: Value, dtype: Value['dtype']): Value {
  const n = productDims(big.shape);
  const m = productDims(small.shape);
  const q = divDim(n, m);
  if (q !== undefined && typeof q === 'number') return op.constant(g, dtype, [1 / q], [], 'inv_count');
  const size = (v: Value): Value => g.addNode('Size', [v], [{ dtype: 'i64', shape: [] }])[0]!;
  return op.reciprocal(op.cast(op.div(size(big), size(small)), dtype));
}

/** A representative size for a (possibly symbolic) spatial dim, divisible by `stride`. */
function representative(d: Dim, stride: number): number {
  return typeof d === 'number' ? d : stride * 1024;
}

type Rule = (ctx: Ctx, node: Node, gys: (Value | null)[], needs: boolean[]) => Grads;

const unaryRule = (f: (ctx: Ctx, node: Node, gy: Value) => Value): Rule => (ctx, node, [gy]) => [f(ctx, node, gy!)];

function binaryRule(da: (ctx: Ctx, gy: Value, a: Value, b: Value, y: () => Value) => Value, db: (ctx: Ctx, gy: Value, a: Value, b: Value, y: () => Value) => Value): Rule {
  return (ctx, node, [gy], needs) => {
    const [a, b] = node.inputs as [Value, Value];
    const y = (): Value => ctx.fwd(node.outputs[0]!);
    return [
      needs[0] ? sumToShape(da(ctx, gy!, a, b, y), a.shape) : null,
      needs[1] ? sumToShape(db(ctx, gy!, a, b, y), b.shape) : null,
    ];
  };
}

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

const RULES: Record<string, Rule> = {
  Add: binaryRule((_c, gy) => gy, (_c, gy) => gy),
  Sub: binaryRule((_c, gy) => gy, (_c, gy) => op.neg(gy)),
  Mul: binaryRule((c, gy, _a, b) => op.mul(gy, c.fwd(b)), (c, gy, a) => op.mul(gy, c.fwd(a))),
  Div: binaryRule(
    (c, gy, _a, b) => op.div(gy, c.fwd(b)),
    (c, gy, _a, b, y) => op.neg(op.div(op.mul(gy, y()), c.fwd(b))),
  ),
  Pow: binaryRule(
    (c, gy, a, b) => op.mul(gy, op.mul(c.fwd(b), op.pow(c.fwd(a), op.sub(c.fwd(b), 1)))),
    (c, gy, a, _b, y) => op.mul(gy, op.mul(y(), op.log(c.fwd(a)))),
  ),
  Neg: unaryRule((_c, _n, gy) => op.neg(gy)),
  Identity: unaryRule((_c, _n, gy) => gy),
  Cast: unaryRule((_c, node, gy) => op.cast(gy, node.inputs[0]!.dtype)),
  Sqrt: unaryRule((c, node, gy) => op.div(op.mul(gy, 0.5), c.fwd(node.outputs[0]!))),
  Exp: unaryRule((c, node, gy) => op.mul(gy, c.fwd(node.outputs[0]!))),
  Log: unaryRule((c, node, gy) => op.div(gy, c.fwd(node.inputs[0]!))),
  Reciprocal: unaryRule((c, node, gy) => {
    const y = c.fwd(node.outputs[0]!);
    return op.neg(op.mul(gy, op.mul(y, y)));
  }),
  Tanh: unaryRule((c, node, gy) => {
    const y = c.fwd(node.outputs[0]!);
    return op.mul(gy, op.sub(1, op.mul(y, y)));
  }),
  Sigmoid: unaryRule((c, node, gy) => {
    const y = c.fwd(node.outputs[0]!);
    return op.mul(gy, op.mul(y, op.sub(1, y)));
  }),
  Relu: unaryRule((c, node, gy) => {
    const x = c.fwd(node.inputs[0]!);
    return op.where(op.less(0, x), gy, op.mul(gy, 0));
  }),
  Erf: unaryRule((c, node, gy) => {
    const x = c.fwd(node.inputs[0]!);
    return op.mul(gy, op.mul(op.exp(op.neg(op.mul(x, x))), 2 / Math.sqrt(Math.PI)));
  }),
  Sin: unaryRule((c, node, gy) => op.mul(gy, op.cos(c.fwd(node.inputs[0]!)))),
  Cos: unaryRule((c, node, gy) => op.neg(op.mul(gy, op.sin(c.fwd(node.inputs[0]!))))),
  Gelu: unaryRule((c, node, gy) => {
    const x = c.fwd(node.inputs[0]!);
    if (attrString(node, 'approximate', 'none') === 'tanh') {
      // y = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
      const x2 = op.mul(x, x);
      const t = op.tanh(op.mul(op.mul(x, op.add(op.mul(x2, 0.044715), 1)), SQRT_2_OVER_PI));
      const du = op.mul(op.add(op.mul(x2, 3 * 0.044715), 1), SQRT_2_OVER_PI);
      const d = op.add(op.mul(op.add(t, 1), 0.5), op.mul(op.mul(op.mul(x, 0.5), op.sub(1, op.mul(t, t))), du));
      return op.mul(gy, d);
    }
    // Phi(x) + x phi(x)
    const cdf = op.mul(op.add(op.erf(op.mul(x, Math.SQRT1_2)), 1), 0.5);
    const pdf = op.mul(op.exp(op.mul(op.mul(x, x), -0.5)), 1 / Math.sqrt(2 * Math.PI));
    return op.mul(gy, op.add(cdf, op.mul(x, pdf)));
  }),
  Where: (ctx, node, [gy], needs) => {
    const [cond, a, b] = node.inputs as [Value, Value, Value];
    const c = ctx.fwd(cond);
    const zero = op.mul(gy!, 0);
    return [null, needs[1] ? sumToShape(op.where(c, gy!, zero), a.shape) : null, needs[2] ? sumToShape(op.where(c, zero, gy!), b.shape) : null];
  },
  MatMul: (ctx, node, [gy], needs) => {
    const [a0, b0] = node.inputs as [Value, Value];
    const a = ctx.fwd(a0);
    const b = ctx.fwd(b0);
    const k = a.shape[a.rank - 1]!;
    const n = b.shape[b.rank - 1]!;
    const da = needs[0] ? sumToShape(op.matmul(gy!, swapLast(b)), a.shape) : null;
    let db: Value | null = null;
    if (needs[1]) {
      if (b.rank === 2 && a.rank > 2 && typeof k === 'number' && typeof n === 'number') {
        // weights shared over the batch: one [K, rows] @ [rows, N] product
        db = op.matmul(op.transpose(op.reshape(a, [-1, k]), [1, 0]), op.reshape(gy!, [-1, n]));
      } else db = sumToShape(op.matmul(swapLast(a), gy!), b.shape);
    }
    return [da, db];
  },
  Gemm: (ctx, node, [gy], needs) => {
    const [a0, b0, c0] = node.inputs as [Value, Value, Value | undefined];
    const a = ctx.fwd(a0);
    const b = ctx.fwd(b0);
    const transA = attrInt(node, 'transA', 0) === 1;
    const transB = attrInt(node, 'transB', 0) === 1;
    const alpha = attrFloat(node, 'alpha', 1);
    const beta = attrFloat(node, 'beta', 1);
    let da: Value | null = null;
    let db: Value | null = null;
    if (needs[0]) {
      // dA' = alpha gy B'^T
      const d = op.gemm(gy!, b, null, { transB: !transB, alpha });
      da = transA ? op.transpose(d, [1, 0]) : d;
    }
    if (needs[1]) {
      // dB' = alpha A'^T gy
      const d = op.gemm(a, gy!, null, { transA: !transA, alpha });
      db = transB ? op.transpose(d, [1, 0]) : d;
    }
    const dc = c0 && needs[2] ? sumToShape(beta === 1 ? gy! : op.mul(gy!, beta), c0.shape) : null;
    return [da, db, dc];
  },
  Conv: (ctx, node, [gy], needs) => convGrad(ctx, node, gy!, needs),
  Reshape: (ctx, node, [gy], needs) => {
    if (!needs[0]) return [null, null];
    const x = node.inputs[0]!;
    const dx = x.shape.every((d) => typeof d === 'number') ? op.reshape(gy!, x.shape as number[]) : op.reshapeLike(gy!, ctx.fwd(x));
    return [dx, null];
  },
  Transpose: (_ctx, node, [gy]) => {
    const perm = attrInts(node, 'perm')!;
    const inv: number[] = [];
    perm.forEach((p, i) => (inv[p] = i));
    return [op.transpose(gy!, inv)];
  },
  Unsqueeze: (ctx, node, [gy]) => [op.squeeze(gy!, ctx.constData(node.inputs[1]!, 'Unsqueeze axes')), null],
  Squeeze: (ctx, node, [gy]) => [op.unsqueeze(gy!, ctx.constData(node.inputs[1]!, 'Squeeze axes')), null],
  Expand: (_ctx, node, [gy]) => [sumToShape(gy!, node.inputs[0]!.shape), null],
  Concat: (_ctx, node, [gy], needs) => {
    const axis = attrInt(node, 'axis', 0);
    const sizes = node.inputs.map((x) => x!.shape[axis]!);
    if (sizes.some(isSymbolic)) fail(node, `concatenation along symbolic axis ${axis} is not differentiable here`);
    const parts = op.split(gy!, axis, sizes as number[]);
    return parts.map((p, i) => (needs[i] ? p : null));
  },
  Split: (_ctx, node, gys) => {
    const parts = node.outputs.map((o, i) => gys[i] ?? op.mul(o, 0));
    return [op.concat(parts, attrInt(node, 'axis', 0)), null];
  },
  Slice: (ctx, node, [gy]) => {
    const x = node.inputs[0]!;
    const starts = ctx.constData(node.inputs[1]!, 'Slice starts');
    const ends = ctx.constData(node.inputs[2]!, 'Slice ends');
    const axes = node.inputs[3] ? ctx.constData(node.inputs[3], 'Slice axes') : range(starts.length);
    if (node.inputs[4]) {
      const steps = ctx.constData(node.inputs[4], 'Slice steps');
      if (steps.some((s) => s !== 1)) fail(node, 'only step 1 is differentiable');
    }
    const pads = Array(2 * x.rank).fill(0) as number[];
    axes.forEach((ax, i) => {
      const a = ax < 0 ? ax + x.rank : ax;
      const d = x.shape[a]!;
      if (typeof d !== 'number') fail(node, `axis ${a} of ${x} is symbolic`);
      const clamp = (v: number): number => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
      const s = clamp(starts[i]!);
      const e = Math.max(clamp(ends[i]!), s);
      pads[a] = s;
      pads[x.rank + a] = d - e;
    });
    return [op.pad(gy!, pads), null, null, null, null];
  },
  Gather: (ctx, node, [gy], needs) => {
    if (!needs[0]) return [null, null];
    if (attrInt(node, 'axis', 0) !== 0) fail(node, 'only axis 0 is differentiable');
    const [data, idx] = node.inputs as [Value, Value];
    const indices = op.unsqueeze(idx.dtype === 'i64' ? ctx.fwd(idx) : op.cast(ctx.fwd(idx), 'i64'), [-1]);
    return [op.scatterAdd(op.mul(ctx.fwd(data), 0), indices, gy!), null];
  },
  Softmax: (ctx, node, [gy]) => {
    const y = ctx.fwd(node.outputs[0]!);
    const axis = attrInt(node, 'axis', -1);
    return [op.mul(y, op.sub(gy!, op.reduceSum(op.mul(gy!, y), [axis], true)))];
  },
  LayerNormalization: (ctx, node, gys, needs) => {
    if (attrInt(node, 'axis', -1) !== -1 && attrInt(node, 'axis', -1) !== node.inputs[0]!.rank - 1) fail(node, 'only the last axis is supported');
    if (gys.slice(1).some((v) => v)) fail(node, 'gradients of the mean/inv_std outputs are not supported');
    return normGrad(ctx, node, gys[0]!, needs, [-1], attrFloat(node, 'epsilon', 1e-5), 'last');
  },
  InstanceNormalization: (ctx, node, [gy], needs) => {
    const r = node.inputs[0]!.rank;
    return normGrad(ctx, node, gy!, needs, range(r, 2), attrFloat(node, 'epsilon', 1e-5), 'channel');
  },
  ReduceMean: (ctx, node, [gy]) => [reduceGrad(ctx, node, gy!, true), null],
  ReduceSum: (ctx, node, [gy]) => [reduceGrad(ctx, node, gy!, false), null],
  Resize: (_ctx, node, [gy]) => {
    if (attrString(node, 'mode', 'nearest') !== 'nearest') fail(node, 'only nearest resizing is differentiable');
    const x = node.inputs[0]!;
    const y = node.outputs[0]!;
    let factor = 0;
    for (let i = 2; i < x.rank; i++) {
      const f = divDim(y.shape[i]!, x.shape[i]!);
      if (typeof f !== 'number' || (factor && f !== factor)) fail(node, `output ${y} is not an equal integer multiple of input ${x}`);
      factor = f;
    }
    const sum = op.mul(op.averagePool(gy!, factor), factor ** (x.rank - 2));
    return [sum, null, null, null];
  },
  MultiHeadAttention: (ctx, node, [gy], needs) => attentionGrad(ctx, node, gy!, needs),
  // DepthToSpace only moves elements; in DCR mode ONNX's SpaceToDepth is its exact inverse,
  // so it carries the gradient back (the VAE decoder's upsampler uses it).
  DepthToSpace: (_ctx, node, [gy]) => {
    if (attrString(node, 'mode', 'DCR') !== 'DCR') fail(node, 'only DCR mode is differentiable');
    const x = node.inputs[0]!;
    const blocksize = attrInt(node, 'blocksize', 0);
    return [gy!.graph.addNode('SpaceToDepth', [gy!], [{ dtype: x.dtype, shape: x.shape }], { blocksize: attr.int(blocksize) })[0]!];
  },
};

function reduceGrad(ctx: Ctx, node: Node, gy: Value, mean: boolean): Value {
  const x = node.inputs[0]!;
  const axes = node.inputs[1] ? ctx.constData(node.inputs[1], `${node.opType} axes`).map((a) => (a < 0 ? a + x.rank : a)) : range(x.rank);
  const keep = attrInt(node, 'keepdims', 1) === 1;
  let g2 = keep ? gy : op.unsqueeze(gy, [...axes].sort((a, b) => a - b));
  if (mean) g2 = op.mul(g2, inverseCount(ctx.g, x, node.outputs[0]!, gy.dtype));
  if (x.shape.every((d) => typeof d === 'number')) return op.expand(g2, op.i64s(ctx.g, x.shape as number[]), x.shape);
  return op.expand(g2, op.shapeOf(ctx.fwd(x)), x.shape);
}

/** Gradient of a normalisation over `axes` with per-`affine` scale and bias (LayerNorm:
 * affine over the last dim; InstanceNorm: per channel, dim 1). */
function normGrad(ctx: Ctx, node: Node, gy: Value, needs: boolean[], axes: number[], eps: number, affine: 'last' | 'channel'): Grads {
  const x = ctx.fwd(node.inputs[0]!);
  const scale = ctx.fwd(node.inputs[1]!);
  const r = x.rank;
  const affineShape = affine === 'last' ? [x.shape[r - 1]!] : [x.shape[1]!, ...Array(r - 2).fill(1)];
  const bcast = (p: Value): Value => (affine === 'last' ? p : op.reshape(p, affineShape as number[]));
  const mean = op.reduceMean(x, axes, true);
  const xc = op.sub(x, mean);
  const rstd = op.reciprocal(op.sqrt(op.add(op.reduceMean(op.mul(xc, xc), axes, true), eps)));
  const xhat = op.mul(xc, rstd);
  const toParam = (v: Value): Value => {
    const s = sumToShape(v, affine === 'last' ? affineShape : [1, ...affineShape]);
    return affine === 'last' ? s : op.reshape(s, [affineShape[0] as number]);
  };
  const dscale = needs[1] ? toParam(op.mul(gy, xhat)) : null;
  const dbias = needs[2] ? toParam(gy) : null;
  let dx: Value | null = null;
  if (needs[0]) {
    const dxhat = op.mul(gy, bcast(scale));
    const m1 = op.reduceMean(dxhat, axes, true);
    const m2 = op.reduceMean(op.mul(dxhat, xhat), axes, true);
    dx = op.mul(rstd, op.sub(op.sub(dxhat, m1), op.mul(xhat, m2)));
  }
  return [dx, dscale, dbias];
}

function convGrad(ctx: Ctx, node: Node, gy: Value, needs: boolean[]): Grads {
  const [x0, w0, b0] = node.inputs as [Value, Value, Value | null | undefined];
  const x = ctx.fwd(x0);
  const w = ctx.fwd(w0);
  const spatial = x.rank - 2;
  const group = attrInt(node, 'group', 1);
  const strides = attrInts(node, 'strides') ?? Array(spatial).fill(1);
  const pads = attrInts(node, 'pads') ?? Array(2 * spatial).fill(0);
  const dil = attrInts(node, 'dilations') ?? Array(spatial).fill(1);
  if (attrString(node, 'auto_pad', 'NOTSET') !== 'NOTSET') fail(node, 'auto_pad is not supported');
  const kernel = w.shape.slice(2) as number[];
  let dx: Value | null = null;
  if (needs[0]) {
    const outPad = range(spatial).map((i) => {
      const s = strides[i]!;
      const xi = representative(x.shape[2 + i]!, s);
      const eff = dil[i]! * (kernel[i]! - 1) + 1;
      const yi = Math.floor((xi + pads[i]! + pads[spatial + i]! - eff) / s) + 1;
      return xi - (s * (yi - 1) + eff - pads[i]! - pads[spatial + i]!);
    });
    dx = op.convTranspose(gy, w, { strides, pads, dilations: dil, group, outputPadding: outPad });
    if (!sameShape(dx.shape, x.shape)) fail(node, `input gradient ${dx} does not match input ${x}`);
  }
  let dw: Value | null = null;
  if (needs[1]) {
    if (group !== 1) fail(node, 'weight gradients of grouped convolutions are not supported');
    const [m, c] = w.shape as [number, number];
    const pointwise = kernel.every((k) => k === 1) && strides.every((s) => s === 1) && pads.every((p) => p === 0);
    if (pointwise) {
      // sum_n dY[n] (M x P) @ X[n]^T (P x C)
      const g3 = op.reshape(gy, [0, m, -1]);
      const x3 = op.reshape(x, [0, c, -1]);
      dw = op.reshape(op.reduceSum(op.matmul(g3, op.transpose(x3, [0, 2, 1])), [0], false), [m, c, ...kernel]);
    } else {
      // correlation of X with dY over the batch: X^T as input [C, N, ...], dY^T as kernel
      const perm = [1, 0, ...range(x.rank, 2)];
      const xt = op.transpose(x, perm);
      const gt = op.transpose(gy, perm);
      const full = range(spatial).map((i) => {
        const s = strides[i]!;
        const xi = representative(x.shape[2 + i]!, s);
        const eff = dil[i]! * (kernel[i]! - 1) + 1;
        const yi = Math.floor((xi + pads[i]! + pads[spatial + i]! - eff) / s) + 1;
        return Math.floor((xi + pads[i]! + pads[spatial + i]! - (s * (yi - 1) + 1)) / dil[i]!) + 1;
      });
      let corr = ctx.g.addNode('Conv', [xt, gt], [{ dtype: x.dtype, shape: [c, m, ...full] }], {
        strides: { kind: 'ints', value: dil },
        dilations: { kind: 'ints', value: strides },
        pads: { kind: 'ints', value: pads },
      })[0]!;
      if (full.some((f, i) => f !== kernel[i])) corr = op.slice(corr, Array(spatial).fill(0), kernel, range(x.rank, 2));
      dw = op.transpose(corr, perm);
    }
  }
  const db = b0 && needs[2] ? op.reduceSum(gy, [0, ...range(x.rank, 2)], false) : null;
  return [dx, dw, db];
}

/** MultiHeadAttention backward: recompute P = softmax(s QK^T + bias) per head, then
 * dV = P^T dO, dS = P * (dP - rowsum(dP * P)) with dP = dO V^T, dQ = s dS K, dK = s dS^T Q. */
function attentionGrad(ctx: Ctx, node: Node, gy: Value, needs: boolean[]): Grads {
  const [q0, k0, v0, kpm, , bias0] = node.inputs;
  if (kpm) fail(node, 'packed inputs / key padding masks are not supported');
  if (node.inputs.length > 6 && node.inputs.slice(6).some((v) => v)) fail(node, 'past key/value inputs are not supported');
  const heads = attrInt(node, 'num_heads', 1);
  const q = ctx.fwd(q0!);
  const k = ctx.fwd(k0!);
  const v = ctx.fwd(v0!);
  const hidden = q.shape[2] as number;
  const d = hidden / heads;
  const vd = (v.shape[2] as number) / heads;
  const scale = attrFloat(node, 'scale', 1 / Math.sqrt(d));
  const split = (t: Value, dd: number): Value => op.transpose(op.reshape(t, [0, 0, heads, dd]), [0, 2, 1, 3]);
  const merge = (t: Value, width: number): Value => op.reshape(op.transpose(t, [0, 2, 1, 3]), [0, 0, width]);
  const qh = split(q, d);
  const kh = split(k, d);
  const vh = split(v, vd);
  const go = split(gy, vd);
  let scores = op.mul(op.matmul(qh, swapLast(kh)), scale);
  if (bias0) scores = op.add(scores, ctx.fwd(bias0));
  const p = op.softmax(scores, -1);
  const dv = needs[2] ? merge(op.matmul(swapLast(p), go), v.shape[2] as number) : null;
  let dq: Value | null = null;
  let dk: Value | null = null;
  if (needs[0] || needs[1]) {
    const dp = op.matmul(go, swapLast(vh));
    const ds = op.mul(op.mul(p, op.sub(dp, op.reduceSum(op.mul(dp, p), [-1], true))), scale);
    if (needs[0]) dq = merge(op.matmul(ds, kh), hidden);
    if (needs[1]) dk = merge(op.matmul(swapLast(ds), qh), hidden);
  }
  if (bias0 && needs[5]) fail(node, 'gradients of the attention bias are not supported');
  return [dq, dk, dv, null, null, null];
}

const NON_DIFFERENTIABLE = new Set(['Shape', 'Size', 'ArgMax', 'Equal', 'Less', 'Greater', 'Not', 'And', 'Or']);

/** Appends to `loss.graph` the nodes computing d loss / d p for each p of `params` (graph
 * inputs or weights) and returns those gradient values, in order. `loss` must hold one
 * element. A parameter the loss does not depend on gets an explicit zero gradient. */
export function gradients(loss: Value, params: readonly Value[], opts: GradientOptions = {}): Value[] {
  const g = loss.graph;
  if (productDims(loss.shape) !== 1) throw new GraphBuildError(`autodiff: loss ${loss} must hold exactly one element`);
  if (!isFloatDtype(loss.dtype)) throw new GraphBuildError(`autodiff: loss ${loss} must be a float`);
  for (const p of params) {
    if (p.graph !== g) throw new GraphBuildError(`autodiff: parameter ${p.name} belongs to another graph`);
    if (!isFloatDtype(p.dtype)) throw new GraphBuildError(`autodiff: parameter ${p} is not a float tensor`);
  }
  const end = loss.producer ? g.nodes.indexOf(loss.producer) + 1 : 0;
  const forward = g.nodes.slice(0, end);

  const requires = new Set<Value>(params);
  for (const node of forward) {
    if (NON_DIFFERENTIABLE.has(node.opType)) continue;
    if (node.inputs.some((i) => i && requires.has(i))) for (const o of node.outputs) if (isFloatDtype(o.dtype)) requires.add(o);
  }
  const reaches = new Set<Value>([loss]);
  for (let i = forward.length - 1; i >= 0; i--) {
    const node = forward[i]!;
    if (node.outputs.some((o) => reaches.has(o))) for (const x of node.inputs) if (x && requires.has(x)) reaches.add(x);
  }

  const consts = new Map<Value, AnyTypedArray>();
  for (const init of g.initializers) if (init.kind === 'constant') consts.set(init.value, init.data);

  // checkpointed segments: name -> nodes (forward order); recomputed lazily
  const segmentOf = new Map<Node, string>();
  const segments = new Map<string, Node[]>();
  if (opts.checkpoint) {
    for (const node of forward) {
      const s = opts.checkpoint(node);
      if (s === undefined) continue;
      segmentOf.set(node, s);
      let list = segments.get(s);
      if (!list) segments.set(s, (list = []));
      list.push(node);
    }
  }
  const recomputed = new Map<string, Map<Value, Value>>();
  let currentGy: Value | null = null;

  const recompute = (name: string): Map<Value, Value> => {
    const hit = recomputed.get(name);
    if (hit) return hit;
    const nodes = segments.get(name)!;
    const inside = new Set<Value>(nodes.flatMap((n) => n.outputs));
    const map = new Map<Value, Value>();
    // 0 * sum(dy): ties the recomputation to the backward pass
    const tie = currentGy && isFloatDtype(currentGy.dtype) ? op.mul(op.reduceSum(currentGy, range(currentGy.rank), false), 0) : null;
    const outer = (v: Value): Value => {
      let m = map.get(v);
      if (m) return m;
      m = tie && isFloatDtype(v.dtype) && v.producer && v.dtype === tie.dtype ? op.add(v, tie) : v;
      map.set(v, m);
      return m;
    };
    for (const n of nodes) {
      const ins = n.inputs.map((i) => (i === null ? null : inside.has(i) ? map.get(i)! : outer(i)));
      const outs = g.addNode(n.opType, ins, n.outputs.map((o) => ({ dtype: o.dtype, shape: o.shape })), { ...n.attrs }, n.domain);
      n.outputs.forEach((o, i) => map.set(o, outs[i]!));
    }
    // only values produced inside the segment are replaced
    const result = new Map<Value, Value>();
    for (const v of inside) result.set(v, map.get(v)!);
    recomputed.set(name, result);
    return result;
  };

  let activeSegment: string | undefined;
  const ctx: Ctx = {
    g,
    fwd: (v) => {
      if (activeSegment === undefined || !v.producer) return v;
      const s = segmentOf.get(v.producer);
      if (s !== activeSegment) return v;
      return recompute(s).get(v) ?? v;
    },
    constData: (v, what) => {
      const data = v && consts.get(v);
      if (!data) throw new GraphBuildError(`autodiff: ${what} (${v?.name}) must be a constant`);
      return Array.from(data as ArrayLike<number | bigint>, Number);
    },
  };

  const contrib = new Map<Value, Value[]>();
  const summed = new Map<Value, Value>();
  const push = (v: Value, d: Value): void => {
    if (!sameShape(d.shape, v.shape)) throw new GraphBuildError(`autodiff: gradient ${d} does not match ${v}`);
    const list = contrib.get(v);
    if (list) list.push(d);
    else contrib.set(v, [d]);
  };
  const total = (v: Value): Value | null => {
    const s = summed.get(v);
    if (s) return s;
    const list = contrib.get(v);
    if (!list) return null;
    const r = list.reduce((a, b) => op.add(a, b));
    summed.set(v, r);
    return r;
  };

  push(loss, op.constant(g, loss.dtype, [1], loss.shape as number[], 'loss_seed'));
  for (let i = forward.length - 1; i >= 0; i--) {
    const node = forward[i]!;
    if (!node.outputs.some((o) => contrib.has(o))) continue;
    const needs = node.inputs.map((x) => !!x && requires.has(x) && reaches.has(x));
    if (!needs.some(Boolean)) continue;
    const rule = RULES[node.opType];
    if (!rule || node.domain !== (node.opType === 'MultiHeadAttention' ? 'com.microsoft' : '')) {
      fail(node, 'no gradient rule for this op');
    }
    const gys = node.outputs.map((o) => total(o));
    currentGy = gys.find((v) => v) ?? null;
    activeSegment = segmentOf.get(node);
    const grads = rule(ctx, node, gys, needs);
    activeSegment = undefined;
    node.inputs.forEach((x, j) => {
      const d = grads[j];
      if (x && d && needs[j]) push(x, d.dtype === x.dtype ? d : op.cast(d, x.dtype));
    });
  }
  return params.map((p) => total(p) ?? op.mul(p, 0));
}
