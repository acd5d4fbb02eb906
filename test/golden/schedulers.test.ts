import { describe, expect, it } from 'vitest';
import { create, noiseSchedule, resolveSamplerName, SD15_SCHEDULER_CONFIG, type Sampler } from '../../src/sampling/index.ts';
import type { NoiseSource } from '../../src/sampling/sampler.ts';
import { SafetensorsFile } from '../../src/tensor/safetensors.ts';
import { readFileSync } from 'node:fs';
import { goldenJson, goldenPath } from '../helpers/golden.ts';

interface StepsEntry { timesteps: number[]; init_noise_sigma: number; order: number; sigmas?: number[] }
interface SchedEntry { cls: string; from_config_kwargs: Record<string, unknown>; config: Record<string, unknown>; steps: Record<string, StepsEntry> }
interface Schedules { sd15_scheduler_config: Record<string, unknown>; schedulers: Record<string, SchedEntry> }
interface TrajEntry { scheduler: string; steps: number; n_noise_draws: number }
interface Trajectories { formula: string; trajectories: Record<string, TrajEntry> }

/** Python's json writes -Infinity (DPM's lambda_min_clipped), which JSON.parse rejects. */
function pythonJson<T>(...parts: string[]): T {
  const text = readFileSync(goldenPath(...parts), 'utf8').replace(/(?<=[:,\[]\s*)(-?Infinity|NaN)(?=\s*[,}\]])/g, '"$1"');
  return JSON.parse(text, (_k, v) => (v === 'Infinity' ? Infinity : v === '-Infinity' ? -Infinity : v === 'NaN' ? NaN : v)) as T;
}

const schedules = pythonJson<Schedules>('schedulers', 'schedules.json');
const trajectories = goldenJson<Trajectories>('schedulers', 'trajectories.json');
const f32 = (xs: readonly number[]) => Array.from(Float32Array.from(xs));

/** Golden keys name the scheduler the way diffusers users do ("euler_ancestral"): resolved through the alias table. */
const samplerFor = (key: string) => resolveSamplerName(key);

describe('SD 1.5 noise schedule', () => {
  it('betas and alphas_cumprod equal torch float32 bit for bit', () => {
    const file = SafetensorsFile.open(goldenPath('schedulers', 'alphas_cumprod.safetensors'));
    const s = noiseSchedule(SD15_SCHEDULER_CONFIG);
    expect(Array.from(s.betas)).toEqual(Array.from(file.getFloat32('betas')));
    expect(Array.from(s.alphasCumprod)).toEqual(Array.from(file.getFloat32('alphas_cumprod')));
    file.close();
  });

  it('SD15_SCHEDULER_CONFIG matches the golden SD 1.5 scheduler_config', () => {
    for (const [k, v] of Object.entries(SD15_SCHEDULER_CONFIG)) expect(schedules.sd15_scheduler_config[k], k).toEqual(v);
  });
});

describe.each(Object.entries(schedules.schedulers))('%s schedule', (key, entry) => {
  const name = samplerFor(key);

  it('resolves the same config diffusers does', () => {
    const sampler = create(name, { steps: 4 });
    for (const [k, v] of Object.entries(sampler.config)) {
      if (k in entry.config) expect(entry.config[k], `${key}.${k}`).toEqual(v);
    }
  });

  it.each(Object.keys(entry.steps))('%s steps: timesteps, sigmas, init_noise_sigma exact', (n) => {
    const ref = entry.steps[n]!;
    const sampler = create(name, { steps: Number(n) });
    expect(f32(sampler.timesteps)).toEqual(f32(ref.timesteps));
    expect(Math.fround(sampler.initNoiseSigma)).toBe(Math.fround(ref.init_noise_sigma));
    if (ref.sigmas) expect(Array.from(sampler.sigmas!)).toEqual(f32(ref.sigmas));
    else expect(sampler.sigmas).toBeNull();
  });
});

/** Replays noise[k] from the file as the k-th draw a stochastic sampler makes. */
class RecordedNoise implements NoiseSource {
  draws = 0;
  constructor(private readonly noise: Float32Array, private readonly per: number) {}
  fill(out: Float32Array): void {
    out.set(this.noise.subarray(this.draws * this.per, (this.draws + 1) * this.per));
    this.draws++;
  }
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe.each(Object.entries(trajectories.trajectories))('trajectory %s', (key, entry) => {
  const name = samplerFor(key.replace(/_\d+$/, ''));

  it('follows the diffusers trajectory at every step (atol 1e-4)', () => {
    const inputs = SafetensorsFile.open(goldenPath('schedulers', 'traj_inputs.safetensors'));
    const xT = inputs.getFloat32('x_T_unit');
    const F = inputs.getFloat32('F');
    inputs.close();
    const file = SafetensorsFile.open(goldenPath('schedulers', `traj_${key}.safetensors`));
    const latents = file.getFloat32('latents');
    const modelInput = file.getFloat32('model_input');
    const modelOutput = file.getFloat32('model_output');
    const refTimesteps = file.getFloat32('timesteps');
    const x0Ref = file.has('pred_original_sample') ? file.getFloat32('pred_original_sample') : null;
    const noise = file.has('noise') ? new RecordedNoise(file.getFloat32('noise'), xT.length) : undefined;
    file.close();

    const n = xT.length;
    const sampler: Sampler = create(name, { steps: entry.steps });
    expect(Array.from(sampler.timesteps)).toEqual(Array.from(refTimesteps));
    const x = xT.map((v) => v * sampler.initNoiseSigma);
    expect(maxAbsDiff(x, latents.subarray(0, n))).toBeLessThan(1e-5);
    const eps = new Float32Array(n);
    for (let i = 0; i < sampler.timesteps.length; i++) {
      const t = sampler.timesteps[i]!;
      const xin = sampler.scaleModelInput(x, i);
      expect(maxAbsDiff(xin, modelInput.subarray(i * n, (i + 1) * n)), `model input step ${i}`).toBeLessThan(1e-4);
      // The toy model of trajectories.json: eps = 0.8*xin + 0.2*F*(0.5 + t/1000), fed our own input.
      const tScale = Math.fround(0.5 + t / 1000);
      for (let k = 0; k < n; k++) eps[k] = 0.8 * xin[k]! + 0.2 * F[k]! * tScale;
      expect(maxAbsDiff(eps, modelOutput.subarray(i * n, (i + 1) * n)), `model output step ${i}`).toBeLessThan(1e-4);
      sampler.step(eps, i, x, noise);
      expect(maxAbsDiff(x, latents.subarray((i + 1) * n, (i + 2) * n)), `latents after step ${i}`).toBeLessThan(1e-4);
      if (x0Ref) expect(maxAbsDiff(sampler.predOriginalSample!, x0Ref.subarray(i * n, (i + 1) * n)), `x0 step ${i}`).toBeLessThan(1e-4);
    }
    if (noise) expect(noise.draws).toBeLessThanOrEqual(entry.n_noise_draws);
  });
});

interface PipelineEntry {
  scheduler: string;
  scheduler_kwargs?: Record<string, unknown>;
  scheduler_config: Record<string, unknown>;
  call: { num_inference_steps: number; guidance_scale: number; strength?: number; eta?: number };
  timesteps: number[];
}

/**
 * The golden pipelines' sampler loops replayed with their recorded UNet outputs: CFG
 * combination, img2img truncation and add_noise, and every latent after every step,
 * through the same calls the pipeline makes (no UNet needed).
 */
/** Entries that name their scheduler class (the LoRA variant reuses DDIM's loop and says only 'pipeline'). */
const pipelineEntries = Object.entries(pythonJson<Record<string, PipelineEntry>>('pipelines', 'pipelines.json')).filter(
  ([, e]) => typeof e.scheduler === 'string',
);

describe('golden pipelines', () => {
  it('name their schedulers for at least the five documented runs', () => expect(pipelineEntries.length).toBeGreaterThanOrEqual(5));
});

describe.each(pipelineEntries)('pipeline sampler loop %s', (key, entry) => {
  it('reproduces latents after every step from the recorded UNet outputs', () => {
    const file = SafetensorsFile.open(goldenPath('pipelines', `${key}.safetensors`));
    const unetOut = file.getFloat32('unet_out');
    const latentsSteps = file.getFloat32('latents_steps');
    const refTimesteps = file.getFloat32('timesteps');
    const karras = entry.scheduler_kwargs?.use_karras_sigmas === true;
    const name = resolveSamplerName(entry.scheduler) + (karras ? ' Karras' : '');
    const sampler = create(name, {
      steps: entry.call.num_inference_steps,
      strength: entry.call.strength,
      eta: entry.call.eta,
      config: entry.scheduler_config,
    });
    expect(f32(sampler.timesteps)).toEqual(Array.from(refTimesteps));
    expect(f32(sampler.timesteps)).toEqual(f32(entry.timesteps));

    let x: Float32Array;
    if (entry.call.strength !== undefined) {
      const image = file.getFloat32('image_latents');
      const noise = file.getFloat32('noise');
      expect(Array.from(file.getFloat32('add_noise_timestep'))).toEqual([Math.fround(sampler.timesteps[0]!)]);
      x = sampler.addNoise(image, noise);
      expect(maxAbsDiff(x, file.getFloat32('noised_latents'))).toBeLessThan(1e-5);
    } else {
      const init = SafetensorsFile.open(goldenPath('pipelines', 'txt2img_init_latents.safetensors'));
      x = init.getFloat32('latents').map((v) => v * sampler.initNoiseSigma);
      init.close();
    }
    file.close();

    const n = x.length;
    const g = entry.call.guidance_scale;
    const eps = new Float32Array(n);
    for (let i = 0; i < sampler.timesteps.length; i++) {
      sampler.scaleModelInput(x, i);
      const u = unetOut.subarray(2 * i * n, (2 * i + 1) * n);
      const c = unetOut.subarray((2 * i + 1) * n, (2 * i + 2) * n);
      for (let k = 0; k < n; k++) eps[k] = u[k]! + g * (c[k]! - u[k]!);
      sampler.step(eps, i, x);
      const ref = latentsSteps.subarray(i * n, (i + 1) * n);
      let scale = 1;
      for (const v of ref) scale = Math.max(scale, Math.abs(v));
      // Latents grow to ~40 with this random UNet: a few float32 roundings relative to that.
      expect(maxAbsDiff(x, ref), `${key} step ${i}`).toBeLessThan(2e-6 * scale);
    }
  });
});
