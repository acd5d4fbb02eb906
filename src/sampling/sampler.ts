import { RedlineError } from '../errors.ts';
import { type NoiseSchedule, noiseSchedule, SD15_SCHEDULER_CONFIG, type SchedulerConfig } from './schedule.ts';

/** Fills a latent-shaped buffer with standard normal noise (a seeded per-image stream). */
export interface NoiseSource {
  fill(out: Float32Array): void;
}

/** Per-run options every sampler takes; `config` overrides diffusers scheduler_config keys. */
export interface SamplerOptions {
  steps: number;
  /** img2img denoising strength in (0, 1]; 1 (default) runs the whole schedule. */
  strength?: number;
  /** DDIM only: 0 = deterministic DDIM, 1 = DDPM-like ancestral noise. */
  eta?: number;
  /** diffusers scheduler_config keys (a model's scheduler_config.json may be passed as is). */
  config?: Partial<SchedulerConfig> | Record<string, unknown>;
}

/**
 * One sampling run: a small state machine over a fixed timestep list, fed one model
 * output per step, updating the latent in place. Create a new one per image batch.
 */
export interface Sampler {
  /** A1111's name for this sampler. */
  readonly name: string;
  readonly config: Readonly<SchedulerConfig>;
  /** Timesteps the loop visits, in order (the model's `t` input); img2img-truncated. */
  readonly timesteps: readonly number[];
  /** The full sigma grid (with the final 0) for sigma-based samplers, else null. */
  readonly sigmas: Float32Array | null;
  /** txt2img start: x_T = unit normal noise * initNoiseSigma. */
  readonly initNoiseSigma: number;
  /** True when step() draws fresh noise (Euler a, LCM, DDIM with eta > 0). */
  readonly stochastic: boolean;
  /**
   * Model input for step i. Returns `x` itself when the sampler does not scale (do not
   * write into it then), else `out` (or an internal buffer reused every step).
   */
  scaleModelInput(x: Float32Array, i: number, out?: Float32Array): Float32Array;
  /** Advances `x` in place from timesteps[i] to the next noise level; returns x. */
  step(modelOutput: Float32Array, i: number, x: Float32Array, noise?: NoiseSource): Float32Array;
  /** The clean-latent (x0) estimate of the last step (LCM: its `denoised`). */
  readonly predOriginalSample: Float32Array | null;
  /** img2img start: noises clean latents to the level of timesteps[0] (into out, or a new array). */
  addNoise(original: Float32Array, noise: Float32Array, out?: Float32Array): Float32Array;
}

export interface ResolvedRun {
  config: SchedulerConfig;
  schedule: NoiseSchedule;
  steps: number;
  strength: number;
}

/** Shared bookkeeping: step order checks, scratch buffers, truncation. */
export abstract class BaseSampler implements Sampler {
  abstract readonly name: string;
  readonly config: SchedulerConfig;
  readonly schedule: NoiseSchedule;
  readonly numInferenceSteps: number;
  /** The whole schedule before img2img truncation. */
  readonly fullTimesteps: number[];
  readonly timesteps: number[];
  /** Index of timesteps[0] inside fullTimesteps (diffusers' begin_index). */
  readonly beginIndex: number;
  sigmas: Float32Array | null = null;
  initNoiseSigma = 1;
  stochastic = false;
  predOriginalSample: Float32Array | null = null;
  private nextStep = 0;
  private scaled: Float32Array | null = null;

  constructor(run: ResolvedRun, fullTimesteps: number[], truncate = true) {
    this.config = run.config;
    this.schedule = run.schedule;
    this.numInferenceSteps = run.steps;
    this.fullTimesteps = fullTimesteps;
    const begin = truncate ? img2imgStart(run.steps, run.strength) : 0;
    this.beginIndex = begin;
    this.timesteps = fullTimesteps.slice(begin);
  }

  scaleModelInput(x: Float32Array, _i: number, _out?: Float32Array): Float32Array {
    return x;
  }

  abstract step(modelOutput: Float32Array, i: number, x: Float32Array, noise?: NoiseSource): Float32Array;

  abstract addNoise(original: Float32Array, noise: Float32Array, out?: Float32Array): Float32Array;

  /** Validates call order and sizes; returns the index into the full schedule. */
  protected enter(i: number, modelOutput: Float32Array, x: Float32Array): number {
    if (i !== this.nextStep) {
      throw new Error(`${this.name}: step(${i}) called out of order; expected step ${this.nextStep} (samplers keep history, create a new one per run)`);
    }
    if (i >= this.timesteps.length) throw new Error(`${this.name}: only ${this.timesteps.length} steps in this run`);
    if (modelOutput.length !== x.length) throw new Error(`${this.name}: model output has ${modelOutput.length} values, latent ${x.length}`);
    this.nextStep++;
    return this.beginIndex + i;
  }

  /** A scratch buffer the size of the latent, allocated once. */
  protected buffer(length: number, existing: Float32Array | null): Float32Array {
    return existing && existing.length === length ? existing : new Float32Array(length);
  }

  protected x0Buffer(length: number): Float32Array {
    this.predOriginalSample = this.buffer(length, this.predOriginalSample);
    return this.predOriginalSample;
  }

  protected scaledBuffer(length: number, out?: Float32Array): Float32Array {
    if (out) {
      if (out.length !== length) throw new Error(`${this.name}: out has ${out.length} values, latent ${length}`);
      return out;
    }
    this.scaled = this.buffer(length, this.scaled);
    return this.scaled;
  }

  protected requireNoise(noise: NoiseSource | undefined): NoiseSource {
    if (!noise) throw new Error(`${this.name} draws noise every step: pass a NoiseSource to step()`);
    return noise;
  }
}

/** diffusers' img2img get_timesteps: skip the first steps - int(steps*strength) entries. */
export function img2imgStart(steps: number, strength: number): number {
  const initTimestep = Math.min(Math.trunc(steps * strength), steps);
  if (initTimestep < 1) {
    throw new RedlineError(
      'strength_too_low',
      `strength ${strength} with ${steps} steps leaves no denoising step (int(steps*strength) = 0).`,
      'Raise --strength or --steps.',
    );
  }
  return Math.max(steps - initTimestep, 0);
}

/**
 * Config resolution as diffusers' `Cls.from_config(sd15_config, **overrides)`: the
 * class's defaults, then SD 1.5's scheduler_config.json, then the caller's keys.
 */
export function resolveRun(classDefaults: Partial<SchedulerConfig>, options: SamplerOptions, name: string): ResolvedRun {
  const config = { ...BASE_DEFAULTS, ...classDefaults, ...SD15_SCHEDULER_CONFIG, ...options.config } as SchedulerConfig;
  rejectUnsupported(config as unknown as Record<string, unknown>, name);
  if (config.prediction_type !== 'epsilon') {
    throw new RedlineError('scheduler_config', `${name}: prediction_type "${String(config.prediction_type)}" is not supported.`, 'SD 1.5 checkpoints predict epsilon.');
  }
  const steps = options.steps;
  if (!Number.isInteger(steps) || steps < 1 || steps > config.num_train_timesteps) {
    throw new RedlineError('bad_steps', `steps must be an integer from 1 to ${config.num_train_timesteps}, got ${steps}.`);
  }
  const strength = options.strength ?? 1;
  if (!(strength > 0 && strength <= 1)) {
    throw new RedlineError('bad_strength', `strength must be in (0, 1], got ${strength}.`);
  }
  return { config, schedule: noiseSchedule(config), steps, strength };
}

/**
 * diffusers options this port does not implement, with the only value it accepts. A
 * config asking for anything else is refused rather than silently sampled differently.
 */
const UNSUPPORTED: Record<string, unknown> = {
  trained_betas: null,
  rescale_betas_zero_snr: false,
  thresholding: false,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  use_lu_lambdas: false,
  use_flow_sigmas: false,
  use_dynamic_shifting: false,
  final_sigmas_type: 'zero',
  interpolation_type: 'linear',
  timestep_type: 'discrete',
  euler_at_final: false,
  variance_type: null,
  sigma_min: null,
  sigma_max: null,
  lambda_min_clipped: -Infinity,
};

function rejectUnsupported(config: Record<string, unknown>, name: string): void {
  for (const [key, accepted] of Object.entries(UNSUPPORTED)) {
    const v = config[key];
    if (v !== undefined && v !== accepted) {
      throw new RedlineError(
        'scheduler_config',
        `${name}: scheduler option ${key}=${JSON.stringify(v)} is not supported.`,
        `Remove it or set ${key} to ${JSON.stringify(accepted)}.`,
      );
    }
  }
}

/** Fails unless config[key] is absent or one of `accepted`. */
export function requireSetting(config: object, key: string, accepted: readonly unknown[], name: string): void {
  const v = (config as Record<string, unknown>)[key];
  if (v !== undefined && !accepted.includes(v)) {
    throw new RedlineError(
      'scheduler_config',
      `${name}: ${key}=${JSON.stringify(v)} is not supported.`,
      `Supported: ${accepted.map((a) => JSON.stringify(a)).join(', ')}.`,
    );
  }
}

/** diffusers' constructor defaults shared by the SD schedulers. */
const BASE_DEFAULTS: SchedulerConfig = {
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: 'linear',
  steps_offset: 0,
  timestep_spacing: 'leading',
  prediction_type: 'epsilon',
  set_alpha_to_one: true,
  clip_sample: true,
  clip_sample_range: 1,
  skip_prk_steps: false,
  use_karras_sigmas: false,
  solver_order: 2,
  lower_order_final: true,
  original_inference_steps: 50,
  timestep_scaling: 10,
};

/** sqrt(acp[t]) x + sqrt(1 - acp[t]) noise: the DDPM forward process (DDIM, PNDM, LCM). */
export function addNoiseDdpm(acp: number, original: Float32Array, noise: Float32Array, out?: Float32Array): Float32Array {
  const dst = out ?? new Float32Array(original.length);
  const f = Math.fround;
  const a = f(Math.sqrt(acp));
  const b = f(Math.sqrt(f(1 - acp)));
  for (let k = 0; k < original.length; k++) dst[k] = a * original[k]! + b * noise[k]!;
  return dst;
}
