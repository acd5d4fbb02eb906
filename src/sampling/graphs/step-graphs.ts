// Sampler updates and the CFG combine as small ONNX graphs, so a GPU run keeps the latents
// on the device between UNet calls: the CPU only computes a handful of per-step scalars
// from the sampler's schedule (SamplerGraphPlan) and the graph does the per-element work.
import { RedlineError } from '../../errors.ts';
import { Graph, type Value } from '../../graph/graph.ts';
import * as op from '../../graph/ops.ts';

export type StepGraphKind = 'euler' | 'euler_a' | 'ddim' | 'dpmpp_2m';

/** How the noise prediction reaches the graph. 'stacked': the UNet's own output for the
 * batch [uncond; cond] (diffusers' order), 'separate': two inputs, 'none': a combined eps. */
export type GuidanceInput = 'stacked' | 'separate' | 'none';

export interface StepGraphOptions {
  /** Latent shape [B, 4, h, w] (fixed: a graph per shape, they are tiny). */
  latentShape: readonly number[];
  guidance: GuidanceInput;
  /** DDIM's clip_sample_range (Infinity or absent: no clipping). */
  clipSample?: number;
  /** DDIM with eta > 0 adds `std * noise`. */
  stochastic?: boolean;
  /** Copies of the next model input stacked along the batch axis for the UNet (2 for CFG). */
  modelInputCopies?: number;
}

/** Names of the per-step scalar inputs of each graph ([1]-shaped f32), in feed order. */
export const STEP_SCALARS: Record<StepGraphKind, readonly string[]> = {
  euler: ['sigma', 'dt', 'next_input_divisor'],
  euler_a: ['sigma', 'dt', 'sigma_up', 'next_input_divisor'],
  ddim: ['sqrt_one_minus_alpha', 'inv_sqrt_alpha', 'sqrt_alpha_prev', 'dir_coef', 'std', 'next_input_divisor'],
  dpmpp_2m: ['sigma_t', 'alpha_t', 'ratio', 'phi', 'second_order_coef', 'next_input_divisor'],
};

/**
 * Builds one sampler step: inputs `latents`, the prediction(s), `cfg` (unless guidance is
 * 'none'), the kind's scalars, `noise` (Euler a; DDIM when stochastic) and `history`
 * (DPM++ 2M: the previous x0); outputs `latents_next`, `x0`, `model_input` (the next
 * step's UNet sample, scaled and stacked) and, for DPM++ 2M, `history_next`.
 */
export function buildStepGraph(kind: StepGraphKind, opts: StepGraphOptions): Graph {
  if (!(kind in STEP_SCALARS)) throw new RedlineError('step_graph_kind', `No step graph for sampler kind "${kind}".`, `Use one of ${Object.keys(STEP_SCALARS).join(', ')}.`);
  const shape = [...opts.latentShape];
  if (shape.length !== 4 || shape.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new RedlineError('step_graph_shape', `Latent shape must be [B, 4, h, w] with positive whole numbers, got [${shape.join(', ')}].`);
  }
  const g = new Graph(`step_${kind}`);
  const x = g.input('latents', 'f32', shape);
  const eps = guidedEps(g, opts.guidance, shape);
  const s: Record<string, Value> = {};
  // `std` stays an input of deterministic DDIM graphs too, so every DDIM graph takes the same feeds.
  for (const name of STEP_SCALARS[kind]) s[name] = g.input(name, 'f32', [1]);

  let next: Value;
  let x0: Value;
  switch (kind) {
    case 'euler':
    case 'euler_a': {
      x0 = op.sub(x, op.mul(s.sigma!, eps));
      next = op.add(x, op.mul(op.div(op.sub(x, x0), s.sigma!), s.dt!));
      if (kind === 'euler_a') next = op.add(next, op.mul(g.input('noise', 'f32', shape), s.sigma_up!));
      break;
    }
    case 'ddim': {
      x0 = op.mul(op.sub(x, op.mul(s.sqrt_one_minus_alpha!, eps)), s.inv_sqrt_alpha!);
      const range = opts.clipSample ?? Infinity;
      if (Number.isFinite(range)) {
        x0 = g.addNode('Clip', [x0, op.constant(g, 'f32', [-range], [], 'clip_min'), op.constant(g, 'f32', [range], [], 'clip_max')], [{ dtype: 'f32', shape }])[0]!;
      }
      next = op.add(op.mul(s.sqrt_alpha_prev!, x0), op.mul(s.dir_coef!, eps));
      if (opts.stochastic) next = op.add(next, op.mul(s.std!, g.input('noise', 'f32', shape)));
      break;
    }
    case 'dpmpp_2m': {
      const history = g.input('history', 'f32', shape);
      x0 = op.div(op.sub(x, op.mul(s.sigma_t!, eps)), s.alpha_t!);
      // second_order_coef = 0.5 * phi / r0 on 2nd-order steps, 0 on 1st-order ones.
      next = op.sub(op.sub(op.mul(s.ratio!, x), op.mul(s.phi!, x0)), op.mul(s.second_order_coef!, op.sub(x0, history)));
      g.output('history_next', op.identity(x0));
      break;
    }
  }
  g.output('latents_next', next);
  g.output('x0', x0);
  const scaled = op.div(next, s.next_input_divisor!);
  const copies = opts.modelInputCopies ?? (opts.guidance === 'none' ? 1 : 2);
  g.output('model_input', copies === 1 ? op.identity(scaled) : op.concat(Array.from({ length: copies }, () => scaled), 0));
  return g;
}

function guidedEps(g: Graph, guidance: GuidanceInput, shape: number[]): Value {
  if (guidance === 'none') return g.input('eps', 'f32', shape);
  let uncond: Value;
  let cond: Value;
  if (guidance === 'stacked') {
    [uncond, cond] = op.split(g.input('noise_pred', 'f32', [2 * shape[0]!, ...shape.slice(1)]), 0, [shape[0]!, shape[0]!]) as [Value, Value];
  } else {
    uncond = g.input('uncond', 'f32', shape);
    cond = g.input('cond', 'f32', shape);
  }
  const cfg = g.input('cfg', 'f32', [1]);
  return op.add(uncond, op.mul(cfg, op.sub(cond, uncond)));
}
