import { RedlineError } from '../../errors.ts';
import { addNoiseDdpm, BaseSampler, type NoiseSource, resolveRun, type SamplerOptions } from '../sampler.ts';
import { roundHalfEven, type SchedulerConfig, spacedTimesteps } from '../schedule.ts';

/** diffusers DDIMScheduler (Song et al. 2020); eta 0 is deterministic. */
export class DdimSampler extends BaseSampler {
  readonly name = 'DDIM';
  static readonly defaults: Partial<SchedulerConfig> = { timestep_spacing: 'leading' };
  private readonly eta: number;
  private readonly finalAlphaCumprod: number;
  private noiseBuf: Float32Array | null = null;

  constructor(options: SamplerOptions) {
    const run = resolveRun(DdimSampler.defaults, options, 'DDIM');
    const { config, steps } = run;
    const t = config.timestep_spacing === 'linspace'
      ? spacedTimesteps('linspace', steps, config.num_train_timesteps, 0, false).map(roundHalfEven)
      : spacedTimesteps(config.timestep_spacing, steps, config.num_train_timesteps, config.steps_offset, false);
    super(run, t);
    this.eta = options.eta ?? 0;
    if (!(this.eta >= 0)) throw new RedlineError('bad_eta', `eta must be >= 0, got ${this.eta}.`);
    this.stochastic = this.eta > 0;
    this.finalAlphaCumprod = config.set_alpha_to_one ? 1 : this.schedule.alphasCumprod[0]!;
  }

  step(eps: Float32Array, i: number, x: Float32Array, noise?: NoiseSource): Float32Array {
    this.enter(i, eps, x);
    const acp = this.schedule.alphasCumprod;
    const t = this.timesteps[i]!;
    const prev = t - Math.floor(this.config.num_train_timesteps / this.numInferenceSteps);
    const aT = acp[t]!;
    const aPrev = prev >= 0 ? acp[prev]! : this.finalAlphaCumprod;
    const bT = 1 - aT;
    const variance = ((1 - aPrev) / bT) * (1 - aT / aPrev);
    const std = this.eta * Math.sqrt(variance);
    const sqrtBT = Math.sqrt(bT);
    const invSqrtAT = 1 / Math.sqrt(aT);
    const dirCoef = Math.sqrt(1 - aPrev - std * std);
    const sqrtAPrev = Math.sqrt(aPrev);
    const x0 = this.x0Buffer(x.length);
    const clip = this.config.clip_sample ? this.config.clip_sample_range : Infinity;
    let z: Float32Array | null = null;
    if (this.eta > 0) {
      z = this.noiseBuf = this.buffer(x.length, this.noiseBuf);
      this.requireNoise(noise).fill(z);
    }
    for (let k = 0; k < x.length; k++) {
      let p = (x[k]! - sqrtBT * eps[k]!) * invSqrtAT;
      if (p > clip) p = clip;
      else if (p < -clip) p = -clip;
      x0[k] = p;
      let next = sqrtAPrev * p + dirCoef * eps[k]!;
      if (z) next += std * z[k]!;
      x[k] = next;
    }
    return x;
  }

  addNoise(original: Float32Array, noise: Float32Array, out?: Float32Array): Float32Array {
    return addNoiseDdpm(this.schedule.alphasCumprod[this.timesteps[0]!]!, original, noise, out);
  }
}
