// The CPU half of a graph-run sampler: the schedule bookkeeping of the JS samplers
// (src/sampling/samplers), reduced to the per-step scalars the step graphs take.
import { RedlineError } from '../../errors.ts';
import type { Graph } from '../../graph/graph.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { create } from '../registry.ts';
import type { NoiseSource, Sampler, SamplerOptions } from '../sampler.ts';
import { DdimSampler } from '../samplers/ddim.ts';
import { DpmPP2MSampler } from '../samplers/dpmpp-2m.ts';
import { EulerAncestralSampler } from '../samplers/euler-ancestral.ts';
import { EulerSampler } from '../samplers/euler.ts';
import { inputScaleDivisor, vpOfSigma } from '../schedule.ts';
import { buildStepGraph, type GuidanceInput, STEP_SCALARS, type StepGraphKind } from './step-graphs.ts';

const scalar = (v: number): Tensor => new Tensor('f32', [1], Float32Array.of(v));

/**
 * One sampling run whose per-element updates run as a step graph. Holds a JS sampler of
 * the same name and options for its schedule (timesteps, sigmas, alphas), so the graph
 * follows exactly the run the JS sampler would make.
 */
export class SamplerGraphPlan {
  readonly kind: StepGraphKind;
  readonly sampler: Sampler;
  readonly stochastic: boolean;
  private readonly eta: number;
  private noiseBuf: Float32Array | null = null;

  constructor(readonly samplerName: string, readonly options: SamplerOptions) {
    this.sampler = create(samplerName, options);
    this.eta = options.eta ?? 0;
    const s = this.sampler;
    if (s instanceof EulerAncestralSampler) this.kind = 'euler_a';
    else if (s instanceof EulerSampler) this.kind = 'euler';
    else if (s instanceof DdimSampler) this.kind = 'ddim';
    else if (s instanceof DpmPP2MSampler) this.kind = 'dpmpp_2m';
    else {
      throw new RedlineError(
        'device_loop_sampler',
        `The sampler "${s.name}" has no step graph yet, so it cannot run in the device loop.`,
        'Use Euler, Euler a, DDIM, DPM++ 2M or DPM++ 2M Karras, or run on the CPU pipeline.',
      );
    }
    this.stochastic = this.kind === 'euler_a' || (this.kind === 'ddim' && this.eta > 0);
  }

  get steps(): number {
    return this.sampler.timesteps.length;
  }

  timestep(i: number): number {
    return this.sampler.timesteps[i]!;
  }

  /** The step graph for this run's sampler and a latent shape. */
  graph(latentShape: readonly number[], guidance: GuidanceInput, modelInputCopies?: number): Graph {
    const cfg = this.sampler.config;
    return buildStepGraph(this.kind, {
      latentShape,
      guidance,
      clipSample: this.kind === 'ddim' && cfg.clip_sample ? cfg.clip_sample_range : Infinity,
      stochastic: this.stochastic,
      ...(modelInputCopies !== undefined ? { modelInputCopies } : {}),
    });
  }

  /** The UNet input of step 0 (what the JS sampler's scaleModelInput gives). */
  initialModelInput(latents: Float32Array): Float32Array {
    return Float32Array.from(this.sampler.scaleModelInput(latents, 0));
  }

  /** Initial values of the graph's carried inputs besides `latents` (DPM++ 2M: `history`). */
  initialHistory(length: number): Record<string, Float32Array> {
    return this.kind === 'dpmpp_2m' ? { history: new Float32Array(length) } : {};
  }

  /** Graph outputs fed back as inputs of the next step. */
  get carry(): Record<string, string> {
    return this.kind === 'dpmpp_2m' ? { latents_next: 'latents', history_next: 'history' } : { latents_next: 'latents' };
  }

  /**
   * The scalars of step i (and `noise` when the step draws some, from `noise` exactly as
   * the JS sampler draws it, so a seeded stream advances the same way).
   */
  feeds(i: number, latentShape: readonly number[], noise?: NoiseSource): Record<string, Tensor> {
    if (!Number.isInteger(i) || i < 0 || i >= this.steps) throw new Error(`step ${i} is outside this run's ${this.steps} steps`);
    const values = this.scalars(i);
    const out: Record<string, Tensor> = {};
    for (const name of STEP_SCALARS[this.kind]) out[name] = scalar(values[name]!);
    if (this.stochastic) {
      const latentLength = latentShape.reduce((a, b) => a * b, 1);
      const z = this.noiseBuf = this.noiseBuf?.length === latentLength ? this.noiseBuf : new Float32Array(latentLength);
      const draws = this.kind === 'ddim' || values.sigma_up! > 0;
      if (draws) {
        if (!noise) throw new Error(`${this.sampler.name} draws noise every step: pass a NoiseSource`);
        noise.fill(z);
      } else z.fill(0);
      out.noise = new Tensor('f32', [...latentShape], z);
    }
    return out;
  }

  private nextDivisor(i: number): number {
    const s = this.sampler;
    if (i + 1 >= this.steps || (this.kind !== 'euler' && this.kind !== 'euler_a')) return 1;
    return inputScaleDivisor(s.sigmas![(s as EulerSampler).beginIndex + i + 1]!);
  }

  private scalars(i: number): Record<string, number> {
    const next_input_divisor = this.nextDivisor(i);
    switch (this.kind) {
      case 'euler':
      case 'euler_a': {
        const s = this.sampler as EulerSampler;
        const idx = s.beginIndex + i;
        const from = s.sigmas[idx]!;
        const to = s.sigmas[idx + 1]!;
        if (this.kind === 'euler') return { sigma: from, dt: to - from, next_input_divisor };
        const up = Math.sqrt((to * to * (from * from - to * to)) / (from * from));
        const down = Math.sqrt(to * to - up * up);
        return { sigma: from, dt: down - from, sigma_up: up, next_input_divisor };
      }
      case 'ddim': {
        const s = this.sampler as DdimSampler;
        const acp = s.schedule.alphasCumprod;
        const t = s.timesteps[i]!;
        const prev = t - Math.floor(s.config.num_train_timesteps / s.numInferenceSteps);
        const aT = acp[t]!;
        const aPrev = prev >= 0 ? acp[prev]! : s.config.set_alpha_to_one ? 1 : acp[0]!;
        const bT = 1 - aT;
        const variance = ((1 - aPrev) / bT) * (1 - aT / aPrev);
        const std = this.eta * Math.sqrt(variance);
        return {
          sqrt_one_minus_alpha: Math.sqrt(bT),
          inv_sqrt_alpha: 1 / Math.sqrt(aT),
          sqrt_alpha_prev: Math.sqrt(aPrev),
          dir_coef: Math.sqrt(1 - aPrev - std * std),
          std,
          next_input_divisor,
        };
      }
      case 'dpmpp_2m': {
        const s = this.sampler as DpmPP2MSampler;
        const idx = s.beginIndex + i;
        const s0 = vpOfSigma(s.sigmas[idx]!);
        const t = vpOfSigma(s.sigmas[idx + 1]!);
        const h = t.lambda - s0.lambda;
        const phi = t.alpha * (Math.exp(-h) - 1);
        // As DpmPP2MSampler.step: first order on the run's first step, on the schedule's
        // last step, and everywhere with solver_order 1.
        const firstOrder = s.config.solver_order === 1 || i === 0 || idx === s.fullTimesteps.length - 1;
        let second = 0;
        if (!firstOrder) {
          const s1 = vpOfSigma(s.sigmas[idx - 1]!);
          second = (0.5 * phi) / ((s0.lambda - s1.lambda) / h);
        }
        return { sigma_t: s0.sigmaT, alpha_t: s0.alpha, ratio: t.sigmaT / s0.sigmaT, phi, second_order_coef: second, next_input_divisor };
      }
    }
  }
}
