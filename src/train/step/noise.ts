// The CPU side of a diffusion training step, in float32 exactly as diffusers computes it:
// DDPMScheduler.add_noise, compute_snr, min-SNR-gamma weights, noise offset. Kept out of the
// graph so the caller owns every random stream and a step is reproducible from its seeds.

import { RedlineError } from '../../errors.ts';
import { noiseSchedule } from '../../sampling/schedule.ts';

const f = Math.fround;

/** SD 1.5's DDPM alphas_cumprod (scaled_linear 0.00085..0.012, 1000 steps), float32. */
export function sd15AlphasCumprod(): Float32Array {
  return noiseSchedule({ num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear' }).alphasCumprod;
}

function check(what: string, n: number, batch: number): void {
  if (n % batch !== 0) throw new RedlineError('train_input', `${what}: ${n} values do not split into ${batch} samples.`, 'Pass one timestep per sample and [B, C, H, W] arrays.');
}

function acAt(ac: Float32Array, t: number): number {
  if (!Number.isInteger(t) || t < 0 || t >= ac.length) throw new RedlineError('train_input', `timestep ${t} is outside 0..${ac.length - 1}.`, 'Training timesteps are integers of the DDPM schedule.');
  return ac[t]!;
}

/** noisy = sqrt(ac[t]) x0 + sqrt(1 - ac[t]) noise, per sample (diffusers add_noise). */
export function addNoise(x0: Float32Array, noise: Float32Array, timesteps: readonly number[], ac: Float32Array = sd15AlphasCumprod()): Float32Array {
  if (x0.length !== noise.length) throw new RedlineError('train_input', `latents (${x0.length}) and noise (${noise.length}) differ in size.`);
  const b = timesteps.length;
  check('latents', x0.length, b);
  const per = x0.length / b;
  const out = new Float32Array(x0.length);
  for (let i = 0; i < b; i++) {
    const a = acAt(ac, timesteps[i]!);
    const sa = f(Math.sqrt(a));
    const sb = f(Math.sqrt(f(1 - a)));
    for (let j = i * per; j < (i + 1) * per; j++) out[j] = f(f(sa * x0[j]!) + f(sb * noise[j]!));
  }
  return out;
}

/** diffusers compute_snr: (sqrt(ac) / sqrt(1 - ac))^2 in float32. */
export function snr(timesteps: readonly number[], ac: Float32Array = sd15AlphasCumprod()): Float32Array {
  return Float32Array.from(timesteps, (t) => {
    const a = acAt(ac, t);
    const r = f(f(Math.sqrt(a)) / f(Math.sqrt(f(1 - a))));
    return f(r * r);
  });
}

/** min-SNR-gamma loss weights for epsilon prediction: min(snr, gamma) / snr. */
export function minSnrWeights(timesteps: readonly number[], gamma: number, ac: Float32Array = sd15AlphasCumprod()): Float32Array {
  if (!(gamma > 0)) throw new RedlineError('train_config', `min_snr_gamma must be positive, got ${gamma}.`, 'kohya and diffusers use 5.');
  return snr(timesteps, ac).map((s) => f(Math.min(s, f(gamma)) / s));
}

/** Noise offset: noise + offset * r[b, c] broadcast over H, W (r: [B, C] standard normal). */
export function offsetNoise(noise: Float32Array, offsetRandn: Float32Array, offset: number): Float32Array {
  const bc = offsetRandn.length;
  check('noise', noise.length, bc);
  const hw = noise.length / bc;
  const out = new Float32Array(noise.length);
  for (let i = 0; i < bc; i++) {
    const d = f(f(offset) * offsetRandn[i]!);
    for (let j = i * hw; j < (i + 1) * hw; j++) out[j] = f(noise[j]! + d);
  }
  return out;
}
