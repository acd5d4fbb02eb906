import { RedlineError } from '../../errors.ts';
import { addNoiseDdpm, BaseSampler, type NoiseSource, resolveRun, type SamplerOptions } from '../sampler.ts';
import type { SchedulerConfig } from '../schedule.ts';

/**
 * diffusers LCMScheduler (Luo et al. 2023) for LCM-distilled models or the LCM LoRA:
 * each step jumps to a consistency-model estimate of x0 (`denoised`) and re-noises it to
 * the next timestep with fresh noise (none after the last step). Timesteps are picked
 * from the 50-step distillation grid; img2img strength shrinks that grid (diffusers'
 * LCM img2img pipeline) instead of dropping steps.
 */
export class LcmSampler extends BaseSampler {
  readonly name = 'LCM';
  static readonly defaults: Partial<SchedulerConfig> = {
    timestep_spacing: 'leading', original_inference_steps: 50, timestep_scaling: 10,
    beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear', clip_sample: false, set_alpha_to_one: true,
  };
  private readonly finalAlphaCumprod: number;
  private noiseBuf: Float32Array | null = null;

  constructor(options: SamplerOptions) {
    const run = resolveRun(LcmSampler.defaults, { ...options, strength: 1 }, 'LCM');
    const strength = options.strength ?? 1;
    if (!(strength > 0 && strength <= 1)) throw new RedlineError('bad_strength', `strength must be in (0, 1], got ${strength}.`);
    const { config, steps } = run;
    const original = config.original_inference_steps;
    const k = Math.floor(config.num_train_timesteps / original);
    const originCount = Math.trunc(original * strength);
    const origin = Array.from({ length: originCount }, (_, j) => (j + 1) * k - 1).reverse();
    if (steps > original || Math.floor(origin.length / steps) < 1) {
      throw new RedlineError(
        'bad_steps',
        `LCM picks its steps from a ${original}-step grid (${origin.length} at strength ${strength}); ${steps} steps do not fit.`,
        `Use at most ${Math.min(original, origin.length)} steps (LCM works best with 4-8).`,
      );
    }
    const stride = origin.length / steps;
    const timesteps = Array.from({ length: steps }, (_, j) => origin[Math.floor(j * stride)]!);
    super(run, timesteps, false);
    this.stochastic = true;
    this.finalAlphaCumprod = config.set_alpha_to_one ? 1 : this.schedule.alphasCumprod[0]!;
  }

  step(eps: Float32Array, i: number, x: Float32Array, noise?: NoiseSource): Float32Array {
    this.enter(i, eps, x);
    const acp = this.schedule.alphasCumprod;
    const t = this.timesteps[i]!;
    const isLast = i === this.timesteps.length - 1;
    const prev = isLast ? t : this.timesteps[i + 1]!;
    const aT = acp[t]!;
    const aPrev = prev >= 0 ? acp[prev]! : this.finalAlphaCumprod;
    const f = Math.fround;
    const scaled = f(t * this.config.timestep_scaling);
    const cSkip = f(0.25 / f(f(scaled * scaled) + 0.25));
    const cOut = f(scaled / f(Math.sqrt(f(f(scaled * scaled) + 0.25))));
    const sqrtBT = Math.sqrt(1 - aT);
    const invSqrtAT = 1 / Math.sqrt(aT);
    const clip = this.config.clip_sample ? this.config.clip_sample_range : Infinity;
    const denoised = this.x0Buffer(x.length);
    for (let k = 0; k < x.length; k++) {
      let p = (x[k]! - sqrtBT * eps[k]!) * invSqrtAT;
      if (p > clip) p = clip;
      else if (p < -clip) p = -clip;
      denoised[k] = cOut * p + cSkip * x[k]!;
    }
    if (isLast) {
      x.set(denoised);
      return x;
    }
    const z = (this.noiseBuf = this.buffer(x.length, this.noiseBuf));
    this.requireNoise(noise).fill(z);
    const a = Math.sqrt(aPrev);
    const b = Math.sqrt(1 - aPrev);
    for (let k = 0; k < x.length; k++) x[k] = a * denoised[k]! + b * z[k]!;
    return x;
  }

  addNoise(original: Float32Array, noise: Float32Array, out?: Float32Array): Float32Array {
    return addNoiseDdpm(this.schedule.alphasCumprod[this.timesteps[0]!]!, original, noise, out);
  }
}
