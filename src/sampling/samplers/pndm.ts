import { RedlineError } from '../../errors.ts';
import { addNoiseDdpm, BaseSampler, resolveRun, type SamplerOptions } from '../sampler.ts';
import { roundHalfEven, type SchedulerConfig, spacedTimesteps } from '../schedule.ts';

/**
 * diffusers PNDMScheduler with skip_prk_steps (SD 1.5's default scheduler; A1111 "PLMS"):
 * pseudo linear multistep, 4th-order Adams-Bashforth on eps. The second timestep is
 * repeated: step 1 re-evaluates the model at the first step's target and averages.
 */
export class PndmSampler extends BaseSampler {
  readonly name = 'PNDM';
  static readonly defaults: Partial<SchedulerConfig> = { timestep_spacing: 'leading', set_alpha_to_one: false, skip_prk_steps: false };
  private readonly finalAlphaCumprod: number;
  private readonly stride: number;
  /** Ring of the last four eps outputs. */
  private ets: Float32Array[] = [];
  private etsCount = 0;
  private curSample: Float32Array | null = null;
  private counter = 0;
  private combined: Float32Array | null = null;

  constructor(options: SamplerOptions) {
    const run = resolveRun(PndmSampler.defaults, options, 'PNDM');
    const { config, steps } = run;
    if (!config.skip_prk_steps) {
      throw new RedlineError('scheduler_config', 'PNDM: only skip_prk_steps=true (the SD 1.5 setting) is supported.', 'Set skip_prk_steps to true.');
    }
    let base: number[];
    if (config.timestep_spacing === 'linspace') {
      base = spacedTimesteps('linspace', steps, config.num_train_timesteps, 0, false).map(roundHalfEven);
    } else {
      base = spacedTimesteps(config.timestep_spacing, steps, config.num_train_timesteps, config.steps_offset, false);
    }
    // diffusers builds ascending [t0..t_{n-2}, t_{n-2}, t_{n-1}] and reverses it.
    const asc = [...base].reverse();
    const plms = [...asc.slice(0, -1), ...asc.slice(-2, -1), ...asc.slice(-1)].reverse();
    super(run, plms);
    this.finalAlphaCumprod = config.set_alpha_to_one ? 1 : this.schedule.alphasCumprod[0]!;
    this.stride = Math.floor(config.num_train_timesteps / steps);
  }

  step(eps: Float32Array, i: number, x: Float32Array): Float32Array {
    this.enter(i, eps, x);
    const n = x.length;
    let t = this.timesteps[i]!;
    let prev = t - this.stride;
    if (this.counter !== 1) {
      if (this.ets.length < 4) this.ets.push(new Float32Array(n));
      const slot = this.ets[this.etsCount % 4]!;
      slot.set(eps);
      this.etsCount++;
    } else {
      prev = t;
      t = t + this.stride;
    }
    const held = Math.min(this.etsCount, 4);
    const newest = this.etsCount - 1;
    const mo = (this.combined = this.buffer(n, this.combined));
    let sample = x;
    if (held === 1 && this.counter === 0) {
      mo.set(eps);
      this.curSample = this.buffer(n, this.curSample);
      this.curSample.set(x);
    } else if (held === 1 && this.counter === 1) {
      const e1 = this.ets[newest % 4]!;
      for (let k = 0; k < n; k++) mo[k] = (eps[k]! + e1[k]!) / 2;
      sample = this.curSample!;
    } else if (held === 2) {
      const e1 = this.ets[newest % 4]!, e2 = this.ets[(newest - 1) % 4]!;
      for (let k = 0; k < n; k++) mo[k] = (3 * e1[k]! - e2[k]!) / 2;
    } else if (held === 3) {
      const e1 = this.ets[newest % 4]!, e2 = this.ets[(newest - 1) % 4]!, e3 = this.ets[(newest - 2) % 4]!;
      for (let k = 0; k < n; k++) mo[k] = (23 * e1[k]! - 16 * e2[k]! + 5 * e3[k]!) / 12;
    } else {
      const e1 = this.ets[newest % 4]!, e2 = this.ets[(newest - 1) % 4]!, e3 = this.ets[(newest - 2) % 4]!, e4 = this.ets[(newest - 3) % 4]!;
      for (let k = 0; k < n; k++) mo[k] = (55 * e1[k]! - 59 * e2[k]! + 37 * e3[k]! - 9 * e4[k]!) / 24;
    }
    this.prevSample(sample, t, prev, mo, x, eps, this.timesteps[i]!);
    this.counter++;
    return x;
  }

  /** x_prev from `sample` at t with combined eps `mo` (PNDM paper eq. 9); x0 from raw eps at tNow. */
  private prevSample(sample: Float32Array, t: number, prev: number, mo: Float32Array, x: Float32Array, eps: Float32Array, tNow: number): void {
    const acp = this.schedule.alphasCumprod;
    const aT = acp[t]!;
    const aPrev = prev >= 0 ? acp[prev]! : this.finalAlphaCumprod;
    const bT = 1 - aT;
    const bPrev = 1 - aPrev;
    const sampleCoef = Math.sqrt(aPrev / aT);
    const denom = aT * Math.sqrt(bPrev) + Math.sqrt(aT * bT * aPrev);
    const moCoef = (aPrev - aT) / denom;
    const aNow = acp[tNow]!;
    const x0 = this.x0Buffer(x.length);
    const sqrtBNow = Math.sqrt(1 - aNow), invSqrtANow = 1 / Math.sqrt(aNow);
    for (let k = 0; k < x.length; k++) {
      x0[k] = (x[k]! - sqrtBNow * eps[k]!) * invSqrtANow;
      x[k] = sampleCoef * sample[k]! - moCoef * mo[k]!;
    }
  }

  addNoise(original: Float32Array, noise: Float32Array, out?: Float32Array): Float32Array {
    return addNoiseDdpm(this.schedule.alphasCumprod[this.timesteps[0]!]!, original, noise, out);
  }
}
