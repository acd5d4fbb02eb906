// Copies a model graph (text encoder, UNet, VAE decoder) into a training-step graph: its
// inputs wired to values of the step graph, its weights either kept as weights (frozen),
// turned into graph inputs (trainable, fed each step) or rewritten (LoRA: W + s·B@A).
// Only the nodes the requested outputs need are copied, so e.g. the text encoder's pooled
// output and clip-skip heads do not run in a training step.

import { dimSymbols, evalDim, type Dim } from '../../graph/dims.ts';
import { GraphBuildError, type Graph, type Node, type TensorSource, type Value } from '../../graph/graph.ts';

export interface CopyOptions {
  /** Prefix for weight names in the step graph (e.g. 'unet.'); also the prefix of the
   * param names handed to `weight`. */
  prefix: string;
  /** Source graph input name -> value of the destination graph. Every input the copied
   * nodes read must be given. */
  inputs: Record<string, Value>;
  /** Source output names to copy (and return). */
  outputs: readonly string[];
  /** Decides what a weight becomes; default: a frozen weight of the destination. */
  weight?: (name: string, source: TensorSource) => Value | undefined;
}

export interface CopyResult {
  outputs: Record<string, Value>;
  /** Destination node -> name of the node it copies (scope-prefixed, e.g.
   * 'down_blocks.1.resnets.0.conv_node'), for choosing checkpoint segments. */
  origin: Map<Node, string>;
}

export function copyGraph(dst: Graph, src: Graph, opts: CopyOptions): CopyResult {
  const outs = opts.outputs.map((name) => {
    const o = src.outputs.find((x) => x.name === name);
    if (!o) throw new GraphBuildError(`graph '${src.name}' has no output '${name}' (outputs: ${src.outputs.map((x) => x.name).join(', ')})`);
    return o.value;
  });
  const needed = new Set<Value>(outs);
  const keep: Node[] = [];
  for (let i = src.nodes.length - 1; i >= 0; i--) {
    const n = src.nodes[i]!;
    if (!n.outputs.some((o) => needed.has(o))) continue;
    keep.push(n);
    for (const x of n.inputs) if (x) needed.add(x);
  }
  keep.reverse();

  const inits = new Map(src.initializers.map((i) => [i.value, i]));
  const srcInputs = new Set(src.inputs);
  const map = new Map<Value, Value>();
  const resolve = (v: Value): Value => {
    const hit = map.get(v);
    if (hit) return hit;
    let r: Value | undefined;
    if (srcInputs.has(v)) {
      r = opts.inputs[v.name];
      if (!r) throw new GraphBuildError(`copying '${src.name}': input '${v.name}' is not wired`);
    } else {
      const init = inits.get(v);
      if (!init) throw new GraphBuildError(`copying '${src.name}': value ${v.name} has no producer`);
      if (init.kind === 'constant') r = dst.constant(init.data, v.dtype, v.shape as number[], v.name);
      else r = opts.weight?.(opts.prefix + v.name, init.source) ?? dst.weight(opts.prefix + v.name, init.source);
    }
    map.set(v, r);
    return r;
  };
  // A symbol of the source (e.g. the UNet's 'sequence') wired to a fixed size (the text
  // encoder's 77) is replaced by that size in every copied shape.
  const fixed: Record<string, number> = {};
  for (const v of src.inputs) {
    const to = opts.inputs[v.name];
    if (!to) continue;
    v.shape.forEach((d, i) => {
      const t = to.shape[i];
      if (typeof d === 'string' && /^[A-Za-z_]\w*$/.test(d) && typeof t === 'number') fixed[d] = t;
    });
  }
  const subst = (d: Dim): Dim => {
    if (typeof d === 'number') return d;
    const syms = dimSymbols(d);
    const known = syms.filter((s) => s in fixed);
    if (known.length === 0) return d;
    if (known.length !== syms.length) throw new GraphBuildError(`copying '${src.name}': dim '${d}' mixes fixed and free symbols`);
    return evalDim(d, fixed);
  };
  const origin = new Map<Node, string>();
  for (const n of keep) {
    const ins = n.inputs.map((x) => (x ? resolve(x) : null));
    const made = dst.addNode(n.opType, ins, n.outputs.map((o) => ({ dtype: o.dtype, shape: o.shape.map(subst) })), { ...n.attrs }, n.domain);
    n.outputs.forEach((o, i) => map.set(o, made[i]!));
    origin.set(made[0]!.producer!, n.name);
  }
  return { outputs: Object.fromEntries(opts.outputs.map((name, i) => [name, resolve(outs[i]!)])), origin };
}
