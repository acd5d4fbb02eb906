// The graph IR models are written in. A Graph is an explicit list of nodes in the order they
// were built (always topological: a node can only consume values that already exist), each
// node an op type + domain + attributes + input/output Values, so later passes (ONNX export,
// reverse-mode autodiff, LoRA rewrites) walk plain data rather than closures.

import type { AnyTypedArray, DType } from '../tensor/dtype.ts';
import { BYTES_PER_ELEMENT } from '../tensor/dtype.ts';
import { canonDim, formatShape, type Dim } from './dims.ts';

export type { Dim } from './dims.ts';

export type AttrValue =
  | { kind: 'int'; value: number }
  | { kind: 'float'; value: number }
  | { kind: 'string'; value: string }
  | { kind: 'ints'; value: readonly number[] }
  | { kind: 'floats'; value: readonly number[] }
  | { kind: 'strings'; value: readonly string[] };

export const attr = {
  int: (value: number): AttrValue => ({ kind: 'int', value }),
  float: (value: number): AttrValue => ({ kind: 'float', value }),
  string: (value: string): AttrValue => ({ kind: 'string', value }),
  ints: (value: readonly number[]): AttrValue => ({ kind: 'ints', value }),
  floats: (value: readonly number[]): AttrValue => ({ kind: 'floats', value }),
  strings: (value: readonly string[]): AttrValue => ({ kind: 'strings', value }),
};

/** Raised when a graph is built wrong (a shape or dtype mismatch): a bug in model code or a
 * config the model does not support, caught before anything runs. */
export class GraphBuildError extends Error {
  override readonly name = 'GraphBuildError';
}

/** Where an initializer's bytes live. `read()` is called once, at export, and the result
 * dropped afterwards, so a multi-GB model never sits in memory twice. `file`, when given,
 * says the bytes already lie raw (little-endian, dense) in a file: the exporter can point
 * ONNX external data at it instead of copying. */
export interface TensorSource {
  readonly dtype: DType;
  readonly shape: readonly number[];
  read(): AnyTypedArray;
  readonly file?: { path: string; offset: number; length: number };
  /** A stable identity of the bytes read() returns (file, range, size, mtime, conversion),
   * for caching exported models; absent when the bytes have no such identity. */
  readonly origin?: string;
}

export class Value {
  /** The node that computes this value; undefined for graph inputs, weights and constants. */
  producer: Node | undefined;
  constructor(
    readonly graph: Graph,
    readonly name: string,
    readonly dtype: DType,
    readonly shape: readonly Dim[],
  ) {}

  get rank(): number {
    return this.shape.length;
  }

  toString(): string {
    return `${this.name}: ${this.dtype}${formatShape(this.shape)}`;
  }
}

export interface Node {
  readonly opType: string;
  /** '' = the default ONNX domain. */
  readonly domain: string;
  readonly name: string;
  /** null = an omitted optional input. */
  readonly inputs: readonly (Value | null)[];
  readonly outputs: readonly Value[];
  readonly attrs: Readonly<Record<string, AttrValue>>;
}

export type Initializer =
  | { kind: 'weight'; value: Value; source: TensorSource }
  | { kind: 'constant'; value: Value; data: AnyTypedArray };

export class Graph {
  readonly inputs: Value[] = [];
  readonly outputs: { name: string; value: Value }[] = [];
  readonly nodes: Node[] = [];
  readonly initializers: Initializer[] = [];
  private readonly names = new Set<string>();
  private readonly scopes: string[] = [];
  private counter = 0;

  constructor(readonly name = 'redline') {}

  /** A fresh value name derived from `base` and the current scope. */
  private fresh(base: string): string {
    const prefix = this.scopes.length ? `${this.scopes.join('.')}.` : '';
    let name = prefix + base;
    while (this.names.has(name)) name = `${prefix}${base}_${++this.counter}`;
    this.names.add(name);
    return name;
  }

  private claim(name: string, what: string): string {
    if (this.names.has(name)) throw new GraphBuildError(`${what} name '${name}' is already used in graph '${this.name}'`);
    this.names.add(name);
    return name;
  }

  /** Runs `fn` with node and value names prefixed by `name` (e.g. 'down_blocks.0'). */
  scope<T>(name: string, fn: () => T): T {
    this.scopes.push(name);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  input(name: string, dtype: DType, shape: readonly Dim[]): Value {
    const v = new Value(this, this.claim(name, 'input'), dtype, shape.map(canonDim));
    this.inputs.push(v);
    return v;
  }

  /** A named parameter (e.g. 'down_blocks.0.resnets.0.conv1.weight'), read lazily at export. */
  weight(name: string, source: TensorSource): Value {
    const v = new Value(this, this.claim(name, 'weight'), source.dtype, [...source.shape]);
    this.initializers.push({ kind: 'weight', value: v, source });
    return v;
  }

  /** A small constant baked into the graph. */
  constant(data: AnyTypedArray, dtype: DType, shape: readonly number[], name = 'const'): Value {
    const n = shape.reduce((a, b) => a * b, 1);
    if (data.length !== n) throw new GraphBuildError(`constant ${name}: ${data.length} elements for shape ${formatShape(shape)}`);
    if (data.BYTES_PER_ELEMENT !== BYTES_PER_ELEMENT[dtype]) throw new GraphBuildError(`constant ${name}: array does not hold ${dtype}`);
    const v = new Value(this, this.fresh(name), dtype, [...shape]);
    this.initializers.push({ kind: 'constant', value: v, data });
    return v;
  }

  output(name: string, value: Value): void {
    this.own(value, `output '${name}'`);
    if (this.outputs.some((o) => o.name === name)) throw new GraphBuildError(`output '${name}' is declared twice`);
    this.outputs.push({ name, value });
  }

  /** Appends a node. Op functions in ops.ts call this after checking shapes. */
  addNode(
    opType: string,
    inputs: readonly (Value | null)[],
    outputs: readonly { dtype: DType; shape: readonly Dim[]; name?: string }[],
    attrs: Record<string, AttrValue> = {},
    domain = '',
  ): Value[] {
    for (const v of inputs) if (v) this.own(v, `input of ${opType}`);
    const base = opType.toLowerCase();
    const outs = outputs.map((o) => new Value(this, this.fresh(o.name ?? base), o.dtype, o.shape.map(canonDim)));
    const node: Node = { opType, domain, name: this.fresh(`${base}_node`), inputs, outputs: outs, attrs };
    for (const o of outs) o.producer = node;
    this.nodes.push(node);
    return outs;
  }

  private own(v: Value, what: string): void {
    if (v.graph !== this) throw new GraphBuildError(`${what}: value ${v.name} belongs to graph '${v.graph.name}', not '${this.name}'`);
  }

  /** Number of parameters held in weights (not constants). */
  parameterCount(): number {
    let n = 0;
    for (const i of this.initializers) if (i.kind === 'weight') n += i.source.shape.reduce((a, b) => a * b, 1);
    return n;
  }
}
