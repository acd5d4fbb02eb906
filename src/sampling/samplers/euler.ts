import { BaseSampler, requireSetting, resolveRun, type SamplerOptions } from '../sampler.ts';
import { discreteSigmaGrid, inputScaleDivisor, type SchedulerConfig } from '../schedule.ts';

/**
 * The samplers on diffusers' discrete sigma grid (Euler, Euler a, LMS): the same grid,
 * input scaling 1/sqrt(sigma^2+1) and add_noise; they differ only in their step.
 */
export abstract class SigmaGridSampler extends BaseSampler {
  declare sigmas: Float32Array;

  constructor(classDefaults: Partial<SchedulerConfig>, options: SamplerOptions, name: string) {
    const run = resolveRun(classDefaults, options, name);
    requireSetting(run.config, 'use_karras_sigmas', [false], name);
    const grid = discreteSigmaGrid(run.config, run.schedule, run.steps);
    super(run, grid.timesteps);
    this.sigmas = grid.sigmas;
    this.initNoiseSigma = grid.initNoiseSigma;
  }

  override scaleModelInput(x: Float32Array, i: number, out?: Float32Array): Float32Array {
    return scaleBySigma(x, this.sigmas[this.beginIndex + i]!, this.scaledBuffer(x.length, out));
  }

  addNoise(original: Float32Array, noise: Float32Array, out?: Float32Array): Float32Array {
    return addNoiseSigma(this.sigmas[this.beginIndex]!, original, noise, out);
  }
}

/** diffusers EulerDiscreteScheduler (Karras et al. 2022 Algorithm 2, no churn). */
export class EulerSampler extends SigmaGridSampler {
  readonly name = 'Euler';
  static readonly defaults: Partial<SchedulerConfig> = { timestep_spacing: 'linspace' };

  constructor(options: SamplerOptions) {
    super(EulerSampler.defaults, options, 'Euler');
  }

  step(eps: Float32Array, i: number, x: Float32Array): Float32Array {
    const idx = this.enter(i, eps, x);
    const sigma = this.sigmas[idx]!;
    const dt = this.sigmas[idx + 1]! - sigma;
    const x0 = this.x0Buffer(x.length);
    for (let k = 0; k < x.length; k++) {
      const p = Math.fround(x[k]! - sigma * eps[k]!);
      x0[k] = p;
      x[k] = x[k]! + ((x[k]! - p) / sigma) * dt;
    }
    return x;
  }
}

export function scaleBySigma(x: Float32Array, sigma: number, out: Float32Array): Float32Array {
  const d = inputScaleDivisor(sigma);
  for (let k = 0; k < x.length; k++) out[k] = x[k]! / d;
  return out;
}

/** x + sigma * noise: the variance-exploding forward process of sigma-based samplers. */
export function addNoiseSigma(sigma: number, original: Float32Array, noise: Float32Array, out?: Float32Array): Float32Array {
  const dst = out ?? new Float32Array(original.length);
  for (let k = 0; k < original.length; k++) dst[k] = original[k]! + noise[k]! * sigma;
  return dst;
}
