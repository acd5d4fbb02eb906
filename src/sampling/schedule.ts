import { RedlineError } from '../errors.ts';
import { fmaF } from './rng/float32.ts';

/**
 * The diffusion noise schedule and the timestep/sigma grids diffusers derives from it,
 * reproduced to the float32 bit where diffusers computes in float32 (torch) and in
 * float64 where it computes in numpy.
 */

/** Scheduler config keys as diffusers' scheduler_config.json spells them. */
export interface SchedulerConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: 'scaled_linear' | 'linear';
  steps_offset: number;
  timestep_spacing: TimestepSpacing;
  prediction_type: 'epsilon';
  set_alpha_to_one: boolean;
  clip_sample: boolean;
  clip_sample_range: number;
  skip_prk_steps: boolean;
  use_karras_sigmas: boolean;
  solver_order: number;
  lower_order_final: boolean;
  original_inference_steps: number;
  timestep_scaling: number;
}

export type TimestepSpacing = 'leading' | 'linspace' | 'trailing';

/** SD 1.5's scheduler_config.json (the PNDM config every SD 1.5 checkpoint ships). */
export const SD15_SCHEDULER_CONFIG = {
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  steps_offset: 1,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  clip_sample: false,
} as const satisfies Partial<SchedulerConfig>;

const f = Math.fround;

/**
 * torch.linspace(start, end, n, float32): float step, the first half counted up from
 * start and the second half down from end, each `a + step*i` fused (torch is compiled
 * with FMA contraction).
 */
function linspaceF32(start: number, end: number, n: number): Float32Array {
  const s = f(start);
  const e = f(end);
  const out = new Float32Array(n);
  if (n === 1) {
    out[0] = s;
    return out;
  }
  const step = f(f(e - s) / (n - 1));
  const half = Math.floor(n / 2);
  for (let i = 0; i < n; i++) out[i] = i < half ? fmaF(step, i, s) : fmaF(-step, n - 1 - i, e);
  return out;
}

export interface NoiseSchedule {
  betas: Float32Array;
  /** cumprod(1 - betas) in float32 (torch accumulates the product in double). */
  alphasCumprod: Float32Array;
  /** sqrt((1 - acp) / acp), float32, ascending with t. */
  sigmas: Float32Array;
}

const scheduleCache = new Map<string, NoiseSchedule>();

export function noiseSchedule(config: Pick<SchedulerConfig, 'num_train_timesteps' | 'beta_start' | 'beta_end' | 'beta_schedule'>): NoiseSchedule {
  const key = `${config.beta_schedule}:${config.beta_start}:${config.beta_end}:${config.num_train_timesteps}`;
  const cached = scheduleCache.get(key);
  if (cached) return cached;
  const n = config.num_train_timesteps;
  let betas: Float32Array;
  if (config.beta_schedule === 'scaled_linear') {
    betas = linspaceF32(Math.sqrt(config.beta_start), Math.sqrt(config.beta_end), n).map((b) => f(b * b));
  } else if (config.beta_schedule === 'linear') {
    betas = linspaceF32(config.beta_start, config.beta_end, n);
  } else {
    throw new RedlineError('scheduler_config', `beta_schedule "${String(config.beta_schedule)}" is not supported.`, 'Use "scaled_linear" (SD 1.5) or "linear".');
  }
  const alphasCumprod = new Float32Array(n);
  let acc = 1;
  for (let i = 0; i < n; i++) {
    acc *= f(1 - betas[i]!);
    alphasCumprod[i] = acc;
  }
  const sigmas = alphasCumprod.map((a) => f(Math.sqrt(f(f(1 - a) / a))));
  const schedule = { betas, alphasCumprod, sigmas };
  scheduleCache.set(key, schedule);
  return schedule;
}

/** numpy's round(): halves go to the even neighbour. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** np.linspace(0, stop, num) in float64 (k * step, last element exactly stop). */
export function linspaceF64(stop: number, num: number): number[] {
  if (num === 1) return [0];
  const step = stop / (num - 1);
  const out = Array.from({ length: num }, (_, k) => k * step);
  out[num - 1] = stop;
  return out;
}

/**
 * The descending timestep grid of diffusers' `timestep_spacing`, `count` points over
 * `trainSteps` (diffusers' DPM/UniPC pass count = steps + 1 and drop the last).
 */
export function spacedTimesteps(spacing: TimestepSpacing, count: number, trainSteps: number, stepsOffset: number, round: boolean): number[] {
  switch (spacing) {
    case 'linspace': {
      const t = linspaceF64(trainSteps - 1, count).reverse();
      return round ? t.map(roundHalfEven) : t;
    }
    case 'leading': {
      const ratio = Math.floor(trainSteps / count);
      return Array.from({ length: count }, (_, k) => k * ratio + stepsOffset).reverse();
    }
    case 'trailing': {
      const ratio = trainSteps / count;
      const out: number[] = [];
      const len = Math.ceil(trainSteps / ratio);
      for (let k = 0; k < len; k++) out.push(roundHalfEven(trainSteps - k * ratio) - 1);
      return out;
    }
    default:
      throw new RedlineError('scheduler_config', `timestep_spacing "${String(spacing)}" is not supported.`, 'Use "leading", "linspace" or "trailing".');
  }
}

/** np.interp(x, arange(len(fp)), fp) in float64. */
export function interpIndex(x: number, fp: ArrayLike<number>): number {
  const last = fp.length - 1;
  if (x <= 0) return fp[0]!;
  if (x >= last) return fp[last]!;
  const j = Math.floor(x);
  if (j === x) return fp[j]!;
  const slope = (fp[j + 1]! - fp[j]!) / 1;
  return slope * (x - j) + fp[j]!;
}

/** Karras et al. (2022) rho=7 sigmas from sigmaMax down to sigmaMin, float64 as numpy. */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number): number[] {
  const rho = 7;
  const minInv = sigmaMin ** (1 / rho);
  const maxInv = sigmaMax ** (1 / rho);
  return linspaceF64(1, n).map((r) => (maxInv + r * (minInv - maxInv)) ** rho);
}

/** diffusers' _sigma_to_t: fractional timestep whose log-sigma interpolates to `sigma`. */
export function sigmaToT(sigma: number, logSigmas: ArrayLike<number>): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  const n = logSigmas.length;
  let count = 0;
  let lowIdx = 0;
  // argmax of cumsum(dists >= 0): the last index whose log-sigma is <= logSigma (first if none).
  for (let i = 0; i < n; i++) {
    if (logSigma - logSigmas[i]! >= 0) {
      count++;
      lowIdx = i;
    }
  }
  if (count === 0) lowIdx = 0;
  lowIdx = Math.min(lowIdx, n - 2);
  const low = logSigmas[lowIdx]!;
  const high = logSigmas[lowIdx + 1]!;
  let w = (low - logSigma) / (low - high);
  w = Math.min(Math.max(w, 0), 1);
  return (1 - w) * lowIdx + w * (lowIdx + 1);
}

/**
 * Timesteps and sigmas of diffusers' Euler/Euler a/LMS (float32 timesteps, sigmas
 * interpolated linearly in t, final sigma 0) and their init_noise_sigma.
 */
export function discreteSigmaGrid(config: SchedulerConfig, schedule: NoiseSchedule, steps: number): { timesteps: number[]; sigmas: Float32Array; initNoiseSigma: number } {
  const train = config.num_train_timesteps;
  let timesteps: number[];
  switch (config.timestep_spacing) {
    case 'linspace':
      timesteps = linspaceF64(train - 1, steps).reverse().map(f);
      break;
    case 'leading':
      timesteps = spacedTimesteps('leading', steps, train, config.steps_offset, false).map(f);
      break;
    default:
      timesteps = spacedTimesteps(config.timestep_spacing, steps, train, config.steps_offset, false).map(f);
  }
  const sigmas = new Float32Array(steps + 1);
  timesteps.forEach((t, k) => (sigmas[k] = interpIndex(t, schedule.sigmas)));
  sigmas[steps] = 0;
  let max = 0;
  for (const s of sigmas) max = Math.max(max, s);
  const initNoiseSigma = config.timestep_spacing === 'leading' ? f(Math.sqrt(f(f(max * max) + 1))) : max;
  return { timesteps, sigmas, initNoiseSigma };
}

/** Euler-type model input scaling 1/sqrt(sigma^2+1), in torch's float32 arithmetic. */
export function inputScaleDivisor(sigma: number): number {
  return f(Math.sqrt(f(f(sigma * sigma) + 1)));
}

/**
 * Integer timesteps and sigmas of diffusers' DPMSolverMultistep/UniPCMultistep: a grid of
 * steps+1 points with the last dropped ('trailing': steps points), or Karras sigmas
 * mapped back to rounded timesteps; final sigma 0.
 */
export function multistepSigmaGrid(config: SchedulerConfig, schedule: NoiseSchedule, steps: number): { timesteps: number[]; sigmas: Float32Array } {
  const train = config.num_train_timesteps;
  const full = schedule.sigmas;
  let timesteps: number[];
  let sigmaValues: number[];
  if (config.use_karras_sigmas) {
    const logSigmas = Float32Array.from(full, (s) => Math.log(s));
    sigmaValues = karrasSigmas(full[0]!, full[full.length - 1]!, steps);
    timesteps = sigmaValues.map((s) => roundHalfEven(sigmaToT(s, logSigmas)));
  } else {
    if (config.timestep_spacing === 'trailing') {
      timesteps = spacedTimesteps('trailing', steps, train, 0, false);
    } else {
      timesteps = spacedTimesteps(config.timestep_spacing, steps + 1, train, config.steps_offset, true).slice(0, -1);
    }
    sigmaValues = timesteps.map((t) => interpIndex(t, full));
  }
  const sigmas = new Float32Array(steps + 1);
  sigmaValues.forEach((s, k) => (sigmas[k] = s));
  sigmas[steps] = 0;
  return { timesteps, sigmas };
}

/** VP coefficients of a VE sigma: alpha = 1/sqrt(sigma^2+1), sigma_t = sigma*alpha, lambda = log(alpha/sigma_t). */
export function vpOfSigma(sigma: number): { alpha: number; sigmaT: number; lambda: number } {
  const alpha = 1 / Math.sqrt(sigma * sigma + 1);
  const sigmaT = sigma * alpha;
  return { alpha, sigmaT, lambda: Math.log(alpha) - Math.log(sigmaT) };
}
