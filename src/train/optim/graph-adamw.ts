// AdamW as graph ops, for appending the update to a step graph (forward + backward +
// update in one session run; on a GPU provider nothing leaves the device but the loss).
// Same element arithmetic as AdamW in adamw.ts (torch's CPU kernels); the per-step scalars
// are graph inputs computed in float64 on the CPU by adamwScalars().

import type { Graph, Value } from '../../graph/graph.ts';
import * as op from '../../graph/ops.ts';

export interface GraphAdamW {
  /** Scalar f32 inputs to feed each step (see adamwScalars). */
  scalarInputs: readonly ['adamw.decay', 'adamw.step_size', 'adamw.bc2_sqrt'];
  /** param name -> names of its moment inputs and of the updated outputs. */
  tensors: Map<string, { expAvgIn: string; expAvgSqIn: string; paramOut: string; expAvgOut: string; expAvgSqOut: string }>;
}

/** Appends the update of each (param, grad) pair: inputs 'exp_avg.<p>', 'exp_avg_sq.<p>'
 * and the three scalars; outputs 'updated.<p>', 'updated.exp_avg.<p>',
 * 'updated.exp_avg_sq.<p>'. */
export function appendAdamW(g: Graph, pairs: readonly { param: Value; grad: Value }[], opts: { betas?: readonly [number, number]; eps?: number } = {}): GraphAdamW {
  const [b1, b2] = opts.betas ?? [0.9, 0.999];
  const eps = opts.eps ?? 1e-8;
  const decay = g.input('adamw.decay', 'f32', []);
  const stepSize = g.input('adamw.step_size', 'f32', []);
  const bc2Sqrt = g.input('adamw.bc2_sqrt', 'f32', []);
  const tensors: GraphAdamW['tensors'] = new Map();
  for (const { param, grad } of pairs) {
    const p = param.name;
    const m = g.input(`exp_avg.${p}`, 'f32', param.shape);
    const v = g.input(`exp_avg_sq.${p}`, 'f32', param.shape);
    const p1 = op.mul(param, decay);
    const m1 = op.add(m, op.mul(op.sub(grad, m), 1 - b1));
    const v1 = op.add(op.mul(v, b2), op.mul(op.mul(grad, 1 - b2), grad));
    const denom = op.add(op.div(op.sqrt(v1), bc2Sqrt), eps);
    const p2 = op.sub(p1, op.div(op.mul(m1, stepSize), denom));
    g.output(`updated.${p}`, p2);
    g.output(`updated.exp_avg.${p}`, m1);
    g.output(`updated.exp_avg_sq.${p}`, v1);
    tensors.set(p, { expAvgIn: m.name, expAvgSqIn: v.name, paramOut: `updated.${p}`, expAvgOut: `updated.exp_avg.${p}`, expAvgSqOut: `updated.exp_avg_sq.${p}` });
  }
  return { scalarInputs: ['adamw.decay', 'adamw.step_size', 'adamw.bc2_sqrt'], tensors };
}

/** The scalar inputs for optimizer step t (1-based), computed in float64. */
export function adamwScalars(t: number, lr: number, weightDecay: number, betas: readonly [number, number] = [0.9, 0.999]): Record<GraphAdamW['scalarInputs'][number], number> {
  return {
    'adamw.decay': 1 - lr * weightDecay,
    'adamw.step_size': lr / (1 - betas[0] ** t),
    'adamw.bc2_sqrt': Math.sqrt(1 - betas[1] ** t),
  };
}
