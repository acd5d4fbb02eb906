// One function per op: check input dtypes and shapes, infer the output shape, append the
// node. A mismatch throws GraphBuildError naming the op, the scope and both shapes, at build
// time rather than as an ORT error deep inside a session.

import type { DType } from '../tensor/dtype.ts';
import { isFloatDtype } from '../tensor/dtype.ts';
import { addDim, canonDim, divDim, formatShape, mulDim, productDims, type Dim } from './dims.ts';
import { attr, GraphBuildError, type AttrValue, type Graph, Value } from './graph.ts';

type Scalar = number;
type Operand = Value | Scalar;

function fail(op: string, msg: string): never {
  throw new GraphBuildError(`${op}: ${msg}`);
}

function normAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) fail(op, `axis ${axis} out of range for rank ${rank}`);
  return a;
}

function requireFloat(op: string, x: Value): void {
  if (!isFloatDtype(x.dtype)) fail(op, `${x.name} is ${x.dtype}, a float type is needed`);
}

function sameDtype(op: string, a: Value, b: Value): void {
  if (a.dtype !== b.dtype) fail(op, `dtype mismatch: ${a} vs ${b}`);
}

function typed(dtype: DType, values: readonly number[]): Float32Array | Float64Array | Uint16Array | BigInt64Array | Int32Array {
  switch (dtype) {
    case 'f32': return Float32Array.from(values);
    case 'f64': return Float64Array.from(values);
    case 'i64': return BigInt64Array.from(values.map((v) => BigInt(v)));
    case 'i32': return Int32Array.from(values);
    default: throw new GraphBuildError(`scalar constants of dtype ${dtype} are not supported`);
  }
}

/** A constant tensor of `dtype` holding `values` with `shape` (default: 1-D). */
export function constant(g: Graph, dtype: DType, values: readonly number[], shape: readonly number[] = [values.length], name?: string): Value {
  return g.constant(typed(dtype, values), dtype, shape, name);
}

export function i64s(g: Graph, values: readonly number[], name = 'i64s'): Value {
  return constant(g, 'i64', values, [values.length], name);
}

function lift(op: string, a: Operand, b: Operand): [Value, Value] {
  if (a instanceof Value && b instanceof Value) return [a, b];
  if (a instanceof Value) return [a, constant(a.graph, a.dtype, [b as number], [], 'scalar')];
  if (b instanceof Value) return [constant(b.graph, b.dtype, [a], [], 'scalar'), b];
  return fail(op, 'at least one operand must be a Value');
}

/** Numpy-style broadcast of two shapes. */
export function broadcastShapes(op: string, a: readonly Dim[], b: readonly Dim[]): Dim[] {
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x === y || y === 1) out.push(x);
    else if (x === 1) out.push(y);
    else fail(op, `cannot broadcast ${formatShape(a)} with ${formatShape(b)} (dim ${i}: ${x} vs ${y})`);
  }
  return out;
}

function binary(opType: string, a: Operand, b: Operand): Value {
  const [x, y] = lift(opType, a, b);
  sameDtype(opType, x, y);
  const shape = broadcastShapes(opType, x.shape, y.shape);
  return x.graph.addNode(opType, [x, y], [{ dtype: x.dtype, shape }])[0]!;
}

export const add = (a: Operand, b: Operand): Value => binary('Add', a, b);
export const sub = (a: Operand, b: Operand): Value => binary('Sub', a, b);
export const mul = (a: Operand, b: Operand): Value => binary('Mul', a, b);
export const div = (a: Operand, b: Operand): Value => binary('Div', a, b);
export const pow = (a: Operand, b: Operand): Value => binary('Pow', a, b);

function compare(opType: string, a: Operand, b: Operand): Value {
  const [x, y] = lift(opType, a, b);
  sameDtype(opType, x, y);
  const shape = broadcastShapes(opType, x.shape, y.shape);
  return x.graph.addNode(opType, [x, y], [{ dtype: 'bool', shape }])[0]!;
}

export const equal = (a: Operand, b: Operand): Value => compare('Equal', a, b);
export const less = (a: Operand, b: Operand): Value => compare('Less', a, b);

function unary(opType: string, x: Value, float = true): Value {
  if (float) requireFloat(opType, x);
  return x.graph.addNode(opType, [x], [{ dtype: x.dtype, shape: x.shape }])[0]!;
}

export const sqrt = (x: Value): Value => unary('Sqrt', x);
export const exp = (x: Value): Value => unary('Exp', x);
export const sin = (x: Value): Value => unary('Sin', x);
export const cos = (x: Value): Value => unary('Cos', x);
export const erf = (x: Value): Value => unary('Erf', x);
export const tanh = (x: Value): Value => unary('Tanh', x);
export const sigmoid = (x: Value): Value => unary('Sigmoid', x);
export const relu = (x: Value): Value => unary('Relu', x);
export const reciprocal = (x: Value): Value => unary('Reciprocal', x);
export const neg = (x: Value): Value => unary('Neg', x, false);
export const identity = (x: Value): Value => unary('Identity', x, false);

/** x * sigmoid(x) (SiLU / swish), as two nodes so every provider has kernels for it. */
export function silu(x: Value): Value {
  return mul(x, sigmoid(x));
}

/** CLIP's quick_gelu: x * sigmoid(1.702 x). */
export function quickGelu(x: Value): Value {
  return mul(x, sigmoid(mul(x, 1.702)));
}

/** Exact (erf) GELU, torch's default. ONNX Gelu (opset 20). */
export function gelu(x: Value, approximate: 'none' | 'tanh' = 'none'): Value {
  requireFloat('Gelu', x);
  return x.graph.addNode('Gelu', [x], [{ dtype: x.dtype, shape: x.shape }], { approximate: attr.string(approximate) })[0]!;
}

export function where(cond: Value, a: Value, b: Value): Value {
  if (cond.dtype !== 'bool') fail('Where', `condition ${cond} must be bool`);
  sameDtype('Where', a, b);
  const shape = broadcastShapes('Where', broadcastShapes('Where', cond.shape, a.shape), b.shape);
  return a.graph.addNode('Where', [cond, a, b], [{ dtype: a.dtype, shape }])[0]!;
}

export function cast(x: Value, to: DType): Value {
  if (x.dtype === to) return x;
  return x.graph.addNode('Cast', [x], [{ dtype: to, shape: x.shape }], { to: attr.int(onnxDataType(to)) })[0]!;
}

/** numpy matmul semantics (1-D operands not supported: reshape first). */
export function matmul(a: Value, b: Value): Value {
  sameDtype('MatMul', a, b);
  if (a.rank < 2 || b.rank < 2) fail('MatMul', `operands must have rank >= 2: ${a}, ${b}`);
  const [m, k1] = a.shape.slice(-2) as [Dim, Dim];
  const [k2, n] = b.shape.slice(-2) as [Dim, Dim];
  if (k1 !== k2) fail('MatMul', `inner dims differ: ${a} @ ${b}`);
  const batch = broadcastShapes('MatMul', a.shape.slice(0, -2), b.shape.slice(0, -2));
  return a.graph.addNode('MatMul', [a, b], [{ dtype: a.dtype, shape: [...batch, m, n] }])[0]!;
}

/** Y = alpha * A' @ B' + beta * C, A and B 2-D (A' = A^T when transA). */
export function gemm(a: Value, b: Value, c: Value | null = null, opts: { transA?: boolean; transB?: boolean; alpha?: number; beta?: number } = {}): Value {
  sameDtype('Gemm', a, b);
  if (a.rank !== 2 || b.rank !== 2) fail('Gemm', `operands must be 2-D: ${a}, ${b}`);
  const [m, ka] = opts.transA ? [a.shape[1]!, a.shape[0]!] : [a.shape[0]!, a.shape[1]!];
  const [kb, n] = opts.transB ? [b.shape[1]!, b.shape[0]!] : [b.shape[0]!, b.shape[1]!];
  if (ka !== kb) fail('Gemm', `inner dims differ: ${a}${opts.transA ? '^T' : ''} @ ${b}${opts.transB ? '^T' : ''}`);
  if (c) {
    sameDtype('Gemm', a, c);
    broadcastShapes('Gemm', [m, n], c.shape);
  }
  const attrs: Record<string, AttrValue> = {};
  if (opts.transA) attrs.transA = attr.int(1);
  if (opts.transB) attrs.transB = attr.int(1);
  if (opts.alpha !== undefined) attrs.alpha = attr.float(opts.alpha);
  if (opts.beta !== undefined) attrs.beta = attr.float(opts.beta);
  return a.graph.addNode('Gemm', c ? [a, b, c] : [a, b], [{ dtype: a.dtype, shape: [m, n] }], attrs)[0]!;
}

/** torch.nn.Linear: x[..., in] @ weight[out, in]^T + bias[out]. */
export function linear(x: Value, weight: Value, bias: Value | null = null): Value {
  if (weight.rank !== 2) fail('Linear', `weight must be [out, in]: ${weight}`);
  const [out, inFeatures] = weight.shape as [Dim, Dim];
  if (x.shape[x.rank - 1] !== inFeatures) fail('Linear', `input ${x} does not end in ${inFeatures} features (weight ${weight})`);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== out)) fail('Linear', `bias ${bias} must be [${out}]`);
  if (x.rank === 2) return gemm(x, weight, bias, { transB: true });
  const y = matmul(x, transpose(weight, [1, 0]));
  return bias ? add(y, bias) : y;
}

export interface ConvOptions {
  strides?: readonly number[];
  pads?: readonly number[]; // [begin..., end...] as ONNX
  dilations?: readonly number[];
  group?: number;
}

function convDim(op: string, d: Dim, k: number, s: number, p0: number, p1: number, dil: number): Dim {
  const eff = dil * (k - 1) + 1;
  if (typeof d === 'number') {
    const o = Math.floor((d + p0 + p1 - eff) / s) + 1;
    if (o <= 0) fail(op, `spatial size ${d} too small for kernel ${k}`);
    return o;
  }
  // floor((d + r)/s) + 1 = floor((d + r + s)/s) = d/s when s divides d and 0 <= r + s < s.
  const r = p0 + p1 - eff;
  if (r + s >= 0 && r + s < s) {
    const q = divDim(d, s);
    if (q !== undefined) return q;
  }
  if (r + s === s) {
    const q = divDim(d, s);
    if (q !== undefined) {
      const o = addDim(q, 1);
      if (o !== undefined) return o;
    }
  }
  return fail(op, `cannot express the output size of symbolic dim '${d}' (kernel ${k}, stride ${s}, pads ${p0}+${p1}) as a monomial`);
}

/** N-d convolution, NCHW, weight [M, C/group, k...]. */
export function conv(x: Value, w: Value, b: Value | null = null, opts: ConvOptions = {}): Value {
  sameDtype('Conv', x, w);
  const spatial = x.rank - 2;
  if (spatial < 1 || w.rank !== x.rank) fail('Conv', `input ${x} and weight ${w} must have the same rank >= 3`);
  const group = opts.group ?? 1;
  const strides = opts.strides ?? Array(spatial).fill(1);
  const pads = opts.pads ?? Array(2 * spatial).fill(0);
  const dilations = opts.dilations ?? Array(spatial).fill(1);
  const cin = x.shape[1]!;
  const wc = w.shape[1]!;
  if (mulDim(wc, group) !== cin) fail('Conv', `input ${x} has ${cin} channels, weight ${w} expects ${wc}x${group}`);
  const m = w.shape[0]!;
  if (b && (b.rank !== 1 || b.shape[0] !== m)) fail('Conv', `bias ${b} must be [${m}]`);
  const out: Dim[] = [x.shape[0]!, m];
  for (let i = 0; i < spatial; i++) {
    const k = w.shape[2 + i]!;
    if (typeof k !== 'number') fail('Conv', `kernel dims must be static: ${w}`);
    out.push(convDim('Conv', x.shape[2 + i]!, k, strides[i]!, pads[i]!, pads[spatial + i]!, dilations[i]!));
  }
  const attrs: Record<string, AttrValue> = {
    kernel_shape: attr.ints(w.shape.slice(2) as number[]),
    strides: attr.ints(strides),
    pads: attr.ints(pads),
    dilations: attr.ints(dilations),
  };
  if (group !== 1) attrs.group = attr.int(group);
  return x.graph.addNode('Conv', b ? [x, w, b] : [x, w], [{ dtype: x.dtype, shape: out }], attrs)[0]!;
}

/** Reshape with a constant target: positive sizes, 0 = keep the input dim at that index,
 * -1 = inferred (at most one). */
export function reshape(x: Value, target: readonly number[]): Value {
  const out: Dim[] = [];
  let inferAt = -1;
  target.forEach((t, i) => {
    if (t === -1) {
      if (inferAt >= 0) fail('Reshape', `more than one -1 in ${formatShape(target)}`);
      inferAt = i;
      out.push(1);
    } else if (t === 0) {
      if (i >= x.rank) fail('Reshape', `0 at index ${i} but input ${x} has rank ${x.rank}`);
      out.push(x.shape[i]!);
    } else if (Number.isInteger(t) && t > 0) out.push(t);
    else fail('Reshape', `bad target size ${t} in ${formatShape(target)}`);
  });
  const total = productDims(x.shape);
  if (inferAt >= 0) {
    const rest = productDims(out);
    const d = divDim(total, rest);
    if (d === undefined) fail('Reshape', `cannot reshape ${x} to ${formatShape(target)}: ${total} is not divisible by ${rest}`);
    out[inferAt] = d;
  } else if (productDims(out) !== total) {
    fail('Reshape', `cannot reshape ${x} (${total} elements) to ${formatShape(target)} (${productDims(out)} elements)`);
  }
  const shape = i64s(x.graph, target, 'shape');
  return x.graph.addNode('Reshape', [x, shape], [{ dtype: x.dtype, shape: out }])[0]!;
}

/** Reshape to the runtime shape of `like` (whose element count must match). */
export function reshapeLike(x: Value, like: Value): Value {
  if (productDims(x.shape) !== productDims(like.shape)) fail('Reshape', `cannot reshape ${x} like ${like}: element counts differ`);
  return x.graph.addNode('Reshape', [x, shapeOf(like)], [{ dtype: x.dtype, shape: like.shape }])[0]!;
}

/** Reshape to a runtime shape given as an i64 vector, with its symbolic result `shape`. */
export function reshapeTo(x: Value, shapeVector: Value, shape: readonly Dim[]): Value {
  if (shapeVector.dtype !== 'i64' || shapeVector.rank !== 1 || shapeVector.shape[0] !== shape.length) {
    fail('Reshape', `shape vector ${shapeVector} must be i64[${shape.length}]`);
  }
  if (productDims(x.shape) !== productDims(shape.map(canonDim))) fail('Reshape', `cannot reshape ${x} to ${formatShape(shape)}`);
  return x.graph.addNode('Reshape', [x, shapeVector], [{ dtype: x.dtype, shape }])[0]!;
}

export function shapeOf(x: Value): Value {
  return x.graph.addNode('Shape', [x], [{ dtype: 'i64', shape: [x.rank] }])[0]!;
}

export function transpose(x: Value, perm: readonly number[]): Value {
  if (perm.length !== x.rank || [...perm].sort((a, b) => a - b).some((p, i) => p !== i)) {
    fail('Transpose', `perm ${formatShape(perm)} is not a permutation of ${x.rank} axes (${x})`);
  }
  return x.graph.addNode('Transpose', [x], [{ dtype: x.dtype, shape: perm.map((p) => x.shape[p]!) }], { perm: attr.ints(perm) })[0]!;
}

export function concat(xs: readonly Value[], axis: number): Value {
  if (xs.length === 0) fail('Concat', 'no inputs');
  const first = xs[0]!;
  const a = normAxis('Concat', axis, first.rank);
  let along: Dim = 0;
  for (const x of xs) {
    sameDtype('Concat', first, x);
    if (x.rank !== first.rank) fail('Concat', `rank mismatch: ${first} vs ${x}`);
    for (let i = 0; i < x.rank; i++) {
      if (i !== a && x.shape[i] !== first.shape[i]) fail('Concat', `dim ${i} differs: ${first} vs ${x}`);
    }
    const s = addDim(along, x.shape[a]!);
    if (s === undefined) fail('Concat', `cannot add symbolic sizes ${along} and ${x.shape[a]} along axis ${a}`);
    along = s;
  }
  const shape = [...first.shape];
  shape[a] = along;
  return first.graph.addNode('Concat', xs, [{ dtype: first.dtype, shape }], { axis: attr.int(a) })[0]!;
}

/** Slice with constant starts/ends (python slicing semantics, step 1) along `axes`. */
export function slice(x: Value, starts: readonly number[], ends: readonly number[], axes: readonly number[]): Value {
  if (starts.length !== ends.length || starts.length !== axes.length) fail('Slice', 'starts, ends and axes differ in length');
  const shape = [...x.shape];
  axes.forEach((ax, i) => {
    const a = normAxis('Slice', ax, x.rank);
    const d = x.shape[a]!;
    let s = starts[i]!;
    let e = ends[i]!;
    if (typeof d === 'number') {
      if (s < 0) s += d;
      if (e < 0) e += d;
      s = Math.min(Math.max(s, 0), d);
      e = Math.min(Math.max(e, 0), d);
      shape[a] = Math.max(e - s, 0);
    } else {
      if (s < 0 || e < 0 || e >= 2 ** 31) fail('Slice', `axis ${a} of ${x} is symbolic; only non-negative bounded slices are supported`);
      shape[a] = e - s;
    }
  });
  const g = x.graph;
  return g.addNode('Slice', [x, i64s(g, starts, 'starts'), i64s(g, ends, 'ends'), i64s(g, axes, 'axes')], [{ dtype: x.dtype, shape }])[0]!;
}

/** Splits along `axis` into pieces of the given sizes. */
export function split(x: Value, axis: number, sizes: readonly number[]): Value[] {
  const a = normAxis('Split', axis, x.rank);
  const total = sizes.reduce((p, q) => p + q, 0);
  if (x.shape[a] !== total) fail('Split', `sizes ${formatShape(sizes)} do not add up to dim ${a} of ${x}`);
  const outs = sizes.map((s) => {
    const shape = [...x.shape];
    shape[a] = s;
    return { dtype: x.dtype, shape };
  });
  return x.graph.addNode('Split', [x, i64s(x.graph, sizes, 'split')], outs, { axis: attr.int(a) });
}

export function softmax(x: Value, axis = -1): Value {
  requireFloat('Softmax', x);
  normAxis('Softmax', axis, x.rank);
  return x.graph.addNode('Softmax', [x], [{ dtype: x.dtype, shape: x.shape }], { axis: attr.int(axis) })[0]!;
}

/** LayerNormalization over the last dim (torch.nn.LayerNorm with one normalized dim). */
export function layerNorm(x: Value, scale: Value, bias: Value, epsilon = 1e-5): Value {
  requireFloat('LayerNormalization', x);
  const c = x.shape[x.rank - 1]!;
  for (const p of [scale, bias]) if (p.rank !== 1 || p.shape[0] !== c) fail('LayerNormalization', `${p} must be [${c}] for input ${x}`);
  return x.graph.addNode('LayerNormalization', [x, scale, bias], [{ dtype: x.dtype, shape: x.shape }], {
    axis: attr.int(-1),
    epsilon: attr.float(epsilon),
  })[0]!;
}

export function instanceNorm(x: Value, scale: Value, bias: Value, epsilon = 1e-5): Value {
  requireFloat('InstanceNormalization', x);
  if (x.rank < 3) fail('InstanceNormalization', `input ${x} must have rank >= 3`);
  const c = x.shape[1]!;
  for (const p of [scale, bias]) if (p.rank !== 1 || p.shape[0] !== c) fail('InstanceNormalization', `${p} must be [${c}] for input ${x}`);
  return x.graph.addNode('InstanceNormalization', [x, scale, bias], [{ dtype: x.dtype, shape: x.shape }], { epsilon: attr.float(epsilon) })[0]!;
}

/** torch.nn.GroupNorm on NC... input as Reshape + InstanceNormalization + Reshape + affine:
 * ONNX GroupNormalization has no WebGPU kernel, this has one on every provider. */
export function groupNorm(x: Value, gamma: Value, beta: Value, groups: number, epsilon = 1e-5): Value {
  const op = 'GroupNorm';
  requireFloat(op, x);
  if (x.rank < 3) fail(op, `input ${x} must be [N, C, ...]`);
  const c = x.shape[1]!;
  if (typeof c !== 'number' || c % groups !== 0) fail(op, `${c} channels of ${x} are not divisible into ${groups} groups`);
  for (const p of [gamma, beta]) if (p.rank !== 1 || p.shape[0] !== c) fail(op, `${p} must be [${c}] for input ${x}`);
  const g = x.graph;
  const grouped = reshape(x, [0, groups, -1]);
  const ones = constant(g, x.dtype, Array(groups).fill(1), [groups], 'ones');
  const zeros = constant(g, x.dtype, Array(groups).fill(0), [groups], 'zeros');
  const normed = reshapeLike(instanceNorm(grouped, ones, zeros, epsilon), x);
  const affineShape = [c, ...Array(x.rank - 2).fill(1)];
  return add(mul(normed, reshape(gamma, affineShape)), reshape(beta, affineShape));
}

/** Nearest-neighbour upsampling by integer factors on the spatial dims (torch
 * F.interpolate(mode='nearest')). */
export function upsampleNearest(x: Value, factor = 2): Value {
  if (x.rank < 3) fail('Resize', `input ${x} must be [N, C, ...]`);
  const g = x.graph;
  const scales = constant(g, 'f32', [1, 1, ...Array(x.rank - 2).fill(factor)], [x.rank], 'scales');
  const shape = x.shape.map((d, i) => (i < 2 ? d : mulDim(d, factor)));
  return g.addNode('Resize', [x, null, scales], [{ dtype: x.dtype, shape }], {
    mode: attr.string('nearest'),
    coordinate_transformation_mode: attr.string('asymmetric'),
    nearest_mode: attr.string('floor'),
  })[0]!;
}

export function gather(data: Value, indices: Value, axis = 0): Value {
  if (indices.dtype !== 'i64' && indices.dtype !== 'i32') fail('Gather', `indices ${indices} must be i64 or i32`);
  const a = normAxis('Gather', axis, data.rank);
  const shape = [...data.shape.slice(0, a), ...indices.shape, ...data.shape.slice(a + 1)];
  return data.graph.addNode('Gather', [data, indices], [{ dtype: data.dtype, shape }], { axis: attr.int(a) })[0]!;
}

export function unsqueeze(x: Value, axes: readonly number[]): Value {
  const rank = x.rank + axes.length;
  const norm = axes.map((a) => normAxis('Unsqueeze', a, rank)).sort((a, b) => a - b);
  const shape = [...x.shape];
  for (const a of norm) shape.splice(a, 0, 1);
  return x.graph.addNode('Unsqueeze', [x, i64s(x.graph, axes, 'axes')], [{ dtype: x.dtype, shape }])[0]!;
}

export function squeeze(x: Value, axes: readonly number[]): Value {
  const norm = axes.map((a) => normAxis('Squeeze', a, x.rank));
  for (const a of norm) if (x.shape[a] !== 1) fail('Squeeze', `dim ${a} of ${x} is not 1`);
  const shape = x.shape.filter((_, i) => !norm.includes(i));
  return x.graph.addNode('Squeeze', [x, i64s(x.graph, axes, 'axes')], [{ dtype: x.dtype, shape }])[0]!;
}

export function reduceMean(x: Value, axes: readonly number[], keepdims = true): Value {
  requireFloat('ReduceMean', x);
  const norm = axes.map((a) => normAxis('ReduceMean', a, x.rank));
  const shape = keepdims ? x.shape.map((d, i) => (norm.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !norm.includes(i));
  return x.graph.addNode('ReduceMean', [x, i64s(x.graph, axes, 'axes')], [{ dtype: x.dtype, shape }], { keepdims: attr.int(keepdims ? 1 : 0) })[0]!;
}

/** Index of the first maximum along `axis` (i64). */
export function argMax(x: Value, axis: number, keepdims = false): Value {
  const a = normAxis('ArgMax', axis, x.rank);
  const shape = keepdims ? x.shape.map((d, i) => (i === a ? 1 : d)) : x.shape.filter((_, i) => i !== a);
  return x.graph.addNode('ArgMax', [x], [{ dtype: 'i64', shape }], { axis: attr.int(a), keepdims: attr.int(keepdims ? 1 : 0) })[0]!;
}

/** Broadcast x to the runtime shape `shapeVector` (i64), whose symbolic value is `shape`. */
export function expand(x: Value, shapeVector: Value, shape: readonly Dim[]): Value {
  const out = broadcastShapes('Expand', x.shape, shape.map(canonDim));
  return x.graph.addNode('Expand', [x, shapeVector], [{ dtype: x.dtype, shape: out }])[0]!;
}

/** com.microsoft.MultiHeadAttention: q [B, S, H*d], k/v [B, L, H*d] -> [B, S, H*d], scale
 * 1/sqrt(d); the attention matrix never leaves the kernel (flash attention on GPUs). */
export function multiHeadAttention(
  q: Value,
  k: Value,
  v: Value,
  numHeads: number,
  opts: { scale?: number; /** added to the scores, [1 or B, 1 or H, S, L] */ attentionBias?: Value } = {},
): Value {
  const op = 'MultiHeadAttention';
  sameDtype(op, q, k);
  sameDtype(op, q, v);
  for (const t of [q, k, v]) if (t.rank !== 3) fail(op, `${t} must be [batch, seq, hidden]`);
  if (q.shape[0] !== k.shape[0] || q.shape[0] !== v.shape[0]) fail(op, `batch differs: ${q}, ${k}, ${v}`);
  if (k.shape[1] !== v.shape[1]) fail(op, `key ${k} and value ${v} lengths differ`);
  const hidden = q.shape[2]!;
  if (k.shape[2] !== hidden) fail(op, `query ${q} and key ${k} widths differ`);
  if (typeof hidden !== 'number' || hidden % numHeads !== 0) fail(op, `width ${hidden} is not divisible by ${numHeads} heads`);
  const attrs: Record<string, AttrValue> = { num_heads: attr.int(numHeads) };
  if (opts.scale !== undefined) attrs.scale = attr.float(opts.scale);
  const bias = opts.attentionBias;
  if (bias) {
    sameDtype(op, q, bias);
    if (bias.rank !== 4 || bias.shape[2] !== q.shape[1] || bias.shape[3] !== k.shape[1]) {
      fail(op, `attention bias ${bias} must be [B or 1, H or 1, ${q.shape[1]}, ${k.shape[1]}]`);
    }
  }
  const inputs = bias ? [q, k, v, null, null, bias] : [q, k, v];
  return q.graph.addNode(op, inputs, [{ dtype: q.dtype, shape: [q.shape[0]!, q.shape[1]!, v.shape[2]!] }], attrs, 'com.microsoft')[0]!;
}

/** Same contract as multiHeadAttention, in plain ONNX ops (MatMul/Softmax); materialises
 * the [B, H, S, L] attention matrix. Kept as a reference and for providers without the
 * contrib op. */
export function attentionReference(q: Value, k: Value, v: Value, numHeads: number, mask: Value | null = null): Value {
  const hidden = q.shape[2] as number;
  const d = hidden / numHeads;
  const heads = (t: Value): Value => transpose(reshape(t, [0, 0, numHeads, d]), [0, 2, 1, 3]);
  let scores = mul(matmul(heads(q), transpose(reshape(k, [0, 0, numHeads, d]), [0, 2, 3, 1])), 1 / Math.sqrt(d));
  if (mask) scores = add(scores, mask);
  const out = matmul(softmax(scores, -1), heads(v));
  return reshape(transpose(out, [0, 2, 1, 3]), [0, 0, hidden]);
}

const ONNX_TYPES: Record<DType, number> = { f32: 1, u8: 2, i8: 3, i16: 5, i32: 6, i64: 7, bool: 9, f16: 10, f64: 11, bf16: 16 };

export function onnxDataType(dtype: DType): number {
  return ONNX_TYPES[dtype];
}

export function dtypeFromOnnx(code: number): DType {
  for (const [d, c] of Object.entries(ONNX_TYPES)) if (c === code) return d as DType;
  throw new GraphBuildError(`ONNX data type ${code} is not supported`);
}

export function reduceSum(x: Value, axes: readonly number[], keepdims = true): Value {
  const norm = axes.map((a) => normAxis('ReduceSum', a, x.rank));
  const shape = keepdims ? x.shape.map((d, i) => (norm.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !norm.includes(i));
  return x.graph.addNode('ReduceSum', [x, i64s(x.graph, axes, 'axes')], [{ dtype: x.dtype, shape }], { keepdims: attr.int(keepdims ? 1 : 0) })[0]!;
}

/** Nearest-neighbour resize of x's spatial dims to those of `like` (torch
 * F.interpolate(size=like.shape[2:], mode='nearest')): the UNet's upsampling, which must land
 * exactly on the skip connection's size also when a down-sampling rounded up. */
export function upsampleNearestTo(x: Value, like: Value): Value {
  if (x.rank < 3 || like.rank !== x.rank) fail('Resize', `input ${x} and reference ${like} must both be [N, C, ...]`);
  const g = x.graph;
  const sizes = concat([slice(shapeOf(x), [0], [2], [0]), slice(shapeOf(like), [2], [like.rank], [0])], 0);
  const shape = [x.shape[0]!, x.shape[1]!, ...like.shape.slice(2)];
  return g.addNode('Resize', [x, null, null, sizes], [{ dtype: x.dtype, shape }], {
    mode: attr.string('nearest'),
    coordinate_transformation_mode: attr.string('asymmetric'),
    nearest_mode: attr.string('floor'),
  })[0]!;
}

// ---- ops added for reverse-mode autodiff (src/graph/autodiff.ts) ----

/** ONNX ConvTranspose (NCHW, weight [C, M/group, k...]): the input-gradient of a Conv.
 * `outputPadding` adds to the end of each spatial dim, so a stride-2 conv's gradient lands
 * on its input's exact size. */
export function convTranspose(x: Value, w: Value, opts: ConvOptions & { outputPadding?: readonly number[] } = {}): Value {
  const op = 'ConvTranspose';
  sameDtype(op, x, w);
  const spatial = x.rank - 2;
  if (spatial < 1 || w.rank !== x.rank) fail(op, `input ${x} and weight ${w} must have the same rank >= 3`);
  const group = opts.group ?? 1;
  if (x.shape[1] !== w.shape[0]) fail(op, `input ${x} has ${x.shape[1]} channels, weight ${w} expects ${w.shape[0]}`);
  const strides = opts.strides ?? Array(spatial).fill(1);
  const pads = opts.pads ?? Array(2 * spatial).fill(0);
  const dil = opts.dilations ?? Array(spatial).fill(1);
  const outPad = opts.outputPadding ?? Array(spatial).fill(0);
  const shape: Dim[] = [x.shape[0]!, mulDim(w.shape[1]!, group)];
  for (let i = 0; i < spatial; i++) {
    const k = w.shape[2 + i];
    if (typeof k !== 'number') fail(op, `kernel ${w} must have numeric spatial dims`);
    const extra = dil[i]! * (k - 1) + 1 + outPad[i]! - pads[i]! - pads[spatial + i]! - strides[i]!;
    const grown = mulDim(x.shape[2 + i]!, strides[i]!);
    const d = extra === 0 ? grown : addDim(grown, extra);
    if (d === undefined) fail(op, `cannot express the output size of ${x} dim ${2 + i} (stride ${strides[i]}, extra ${extra}) as a monomial`);
    shape.push(d);
  }
  const attrs: Record<string, AttrValue> = { strides: attr.ints(strides), pads: attr.ints(pads), dilations: attr.ints(dil), group: attr.int(group) };
  if (outPad.some((p) => p !== 0)) attrs.output_padding = attr.ints(outPad);
  return x.graph.addNode(op, [x, w], [{ dtype: x.dtype, shape }], attrs)[0]!;
}

/** Zero padding with constant widths: `pads` = [begin per axis..., end per axis...]. */
export function pad(x: Value, pads: readonly number[]): Value {
  if (pads.length !== 2 * x.rank) fail('Pad', `${pads.length} pad widths for rank ${x.rank} input ${x}`);
  if (pads.some((p) => !Number.isInteger(p) || p < 0)) fail('Pad', `pad widths ${formatShape(pads)} must be non-negative integers`);
  const shape = x.shape.map((d, i) => {
    const extra = pads[i]! + pads[x.rank + i]!;
    const s = extra === 0 ? d : addDim(d, extra);
    if (s === undefined) fail('Pad', `cannot pad symbolic dim ${d} of ${x}`);
    return s;
  });
  return x.graph.addNode('Pad', [x, i64s(x.graph, pads, 'pads')], [{ dtype: x.dtype, shape }], { mode: attr.string('constant') })[0]!;
}

/** Average pooling with kernel = stride = `factor` over the spatial dims of NC... input,
 * which must divide them: the sum-pool (times factor^n) that is nearest upsampling's gradient. */
export function averagePool(x: Value, factor: number): Value {
  if (x.rank < 3) fail('AveragePool', `input ${x} must be [N, C, ...]`);
  const shape = x.shape.map((d, i) => {
    if (i < 2) return d;
    const q = divDim(d, factor);
    if (q === undefined) fail('AveragePool', `dim ${i} of ${x} is not divisible by ${factor}`);
    return q;
  });
  const k = Array(x.rank - 2).fill(factor);
  return x.graph.addNode('AveragePool', [x], [{ dtype: x.dtype, shape }], { kernel_shape: attr.ints(k), strides: attr.ints(k) })[0]!;
}

/** ScatterND with reduction 'add': data with `updates` added at `indices` ([..., 1] into
 * axis 0): the gradient of Gather on a table. */
export function scatterAdd(data: Value, indices: Value, updates: Value): Value {
  const op = 'ScatterND';
  sameDtype(op, data, updates);
  if (indices.dtype !== 'i64') fail(op, `indices ${indices} must be i64`);
  if (indices.shape[indices.rank - 1] !== 1) fail(op, `indices ${indices} must end in 1 (rows of axis 0)`);
  const expect = [...indices.shape.slice(0, -1), ...data.shape.slice(1)];
  if (expect.length !== updates.rank || expect.some((d, i) => d !== updates.shape[i])) fail(op, `updates ${updates} must be ${formatShape(expect)}`);
  return data.graph.addNode(op, [data, indices, updates], [{ dtype: data.dtype, shape: data.shape }], { reduction: attr.string('add') })[0]!;
}

/** Natural logarithm. */
export const log = (x: Value): Value => unary('Log', x);

/** ONNX DepthToSpace, DCR order, on [N, C, H, W]: out[n, c, h*b + i, w*b + j] =
 * x[n, (i*b + j) * C/b² + c, h, w], i.e. channel block k of C/b² holds the output pixels at
 * offset (k / b, k % b) of every b x b cell. */
export function depthToSpace(x: Value, blocksize: number): Value {
  const op = 'DepthToSpace';
  if (x.rank !== 4) fail(op, `input ${x} must be [N, C, H, W]`);
  if (!Number.isInteger(blocksize) || blocksize < 1) fail(op, `block size ${blocksize} must be a positive integer`);
  const c = x.shape[1]!;
  const b2 = blocksize * blocksize;
  if (typeof c !== 'number' || c % b2 !== 0) fail(op, `${c} channels of ${x} are not divisible by ${b2}`);
  const shape = [x.shape[0]!, c / b2, mulDim(x.shape[2]!, blocksize), mulDim(x.shape[3]!, blocksize)];
  return x.graph.addNode(op, [x], [{ dtype: x.dtype, shape }], { blocksize: attr.int(blocksize), mode: attr.string('DCR') })[0]!;
}
