import { describe, expect, it } from 'vitest';
import { RedlineError } from '../../src/errors.ts';
import { create, resolveSamplerName, SAMPLER_NAMES } from '../../src/sampling/index.ts';
import type { NoiseSource } from '../../src/sampling/sampler.ts';

describe('sampler names', () => {
  it.each([
    ['euler_ancestral', 'Euler a'], ['k_euler_a', 'Euler a'], ['EULER A', 'Euler a'],
    ['dpmpp_2m_karras', 'DPM++ 2M Karras'], ['DPM++ 2M Karras', 'DPM++ 2M Karras'], ['dpmpp_2m', 'DPM++ 2M'],
    ['plms', 'PNDM'], ['PNDMScheduler', 'PNDM'], ['k_lms', 'LMS'], ['uni_pc', 'UniPC'], ['lcm', 'LCM'], ['ddim', 'DDIM'],
    ['EulerDiscreteScheduler', 'Euler'],
  ])('%s -> %s', (alias, name) => expect(resolveSamplerName(alias)).toBe(name));

  it('every A1111 name resolves to itself and creates its sampler', () => {
    for (const n of SAMPLER_NAMES) {
      expect(resolveSamplerName(n)).toBe(n);
      expect(create(n, { steps: 4 }).name).toBe(n);
    }
  });

  it('an unknown name is a RedlineError that lists the valid names', () => {
    let err: unknown;
    try {
      create('Heun++ 3S', { steps: 10 });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RedlineError);
    expect((err as RedlineError).code).toBe('unknown_sampler');
    for (const n of SAMPLER_NAMES) expect((err as RedlineError).message).toContain(n);
  });

  it('bad steps and strength are RedlineErrors naming the value', () => {
    expect(() => create('Euler', { steps: 0 })).toThrow(/steps must be an integer from 1 to 1000, got 0/);
    expect(() => create('Euler', { steps: 2.5 })).toThrow(RedlineError);
    expect(() => create('DDIM', { steps: 20, strength: 1.5 })).toThrow(/strength must be in \(0, 1\], got 1.5/);
    expect(() => create('DDIM', { steps: 4, strength: 0.2 })).toThrow(/leaves no denoising step/);
    expect(() => create('LCM', { steps: 60 })).toThrow(/50-step grid/);
  });
});

describe('img2img truncation (diffusers get_timesteps)', () => {
  it('keeps the last int(steps*strength) timesteps and starts add_noise there', () => {
    const full = create('DDIM', { steps: 8 });
    const part = create('DDIM', { steps: 8, strength: 0.6 });
    // int(8 * 0.6) = 4: diffusers' img2img golden ran [376, 251, 126, 1].
    expect(part.timesteps).toEqual(full.timesteps.slice(4));
    expect(part.timesteps).toEqual([376, 251, 126, 1]);
  });

  it('sigma samplers start from the truncated sigma (no init_noise_sigma scaling)', () => {
    const part = create('Euler', { steps: 10, strength: 0.5 });
    const full = create('Euler', { steps: 10 });
    expect(part.timesteps).toEqual(full.timesteps.slice(5));
    const x0 = new Float32Array([1, -2]);
    const noise = new Float32Array([0.5, 0.25]);
    const sigma = full.sigmas![5]!;
    expect(Array.from(part.addNoise(x0, noise))).toEqual([1 + 0.5 * sigma, -2 + 0.25 * sigma].map(Math.fround));
  });

  it('PNDM slices its doubled-timestep list the same way diffusers does', () => {
    const full = create('PNDM', { steps: 8 });
    expect(full.timesteps.length).toBe(9);
    expect(create('PNDM', { steps: 8, strength: 0.5 }).timesteps).toEqual(full.timesteps.slice(4));
  });

  it('LCM shrinks its 50-step origin grid instead (diffusers LCM img2img)', () => {
    // strength 0.5: origin grid (25..1)*20-1, 4 steps at indices floor(k*25/4) = 0, 6, 12, 18.
    expect(create('LCM', { steps: 4, strength: 0.5 }).timesteps).toEqual([499, 379, 259, 139]);
  });
});

function runToy(name: string, steps: number, noise?: NoiseSource): Float32Array {
  const s = create(name, { steps });
  const x = new Float32Array(64).map((_, k) => Math.sin(k) * s.initNoiseSigma);
  const eps = new Float32Array(64);
  for (let i = 0; i < s.timesteps.length; i++) {
    const xin = s.scaleModelInput(x, i);
    for (let k = 0; k < 64; k++) eps[k] = 0.9 * xin[k]!;
    s.step(eps, i, x, noise);
  }
  return x;
}

describe('sampler state machines', () => {
  it('reject steps out of order and a missing noise source', () => {
    const s = create('Euler', { steps: 4 });
    const x = new Float32Array(4);
    expect(() => s.step(new Float32Array(4), 1, x)).toThrow(/out of order/);
    const a = create('Euler a', { steps: 4 });
    expect(() => a.step(new Float32Array(4), 0, new Float32Array(4))).toThrow(/NoiseSource/);
  });

  it('scaleModelInput writes into the caller buffer or one reused buffer', () => {
    const s = create('Euler', { steps: 4 });
    const x = new Float32Array([1, 2, 3]);
    const a = s.scaleModelInput(x, 0);
    const b = s.scaleModelInput(x, 0);
    expect(a).toBe(b);
    expect(a).not.toBe(x);
    const out = new Float32Array(3);
    expect(s.scaleModelInput(x, 0, out)).toBe(out);
    expect(create('DDIM', { steps: 4 }).scaleModelInput(x, 0)).toBe(x);
  });

  it('deterministic samplers give the same latents twice; ancestral ones follow their noise', () => {
    for (const n of ['DDIM', 'PNDM', 'Euler', 'LMS', 'DPM++ 2M', 'DPM++ 2M Karras', 'UniPC']) {
      expect(Array.from(runToy(n, 6))).toEqual(Array.from(runToy(n, 6)));
    }
    let draws = 0;
    const counting: NoiseSource = { fill: (out) => { out.fill(0.1); draws++; } };
    runToy('Euler a', 6, counting);
    // k-diffusion/A1111 draw no noise on the last step (sigma_up = 0).
    expect(draws).toBe(5);
    draws = 0;
    runToy('LCM', 6, counting);
    expect(draws).toBe(5);
  });

  it('DDIM with eta > 0 draws noise each step, with eta 0 it never asks', () => {
    let draws = 0;
    const s = create('DDIM', { steps: 3, eta: 1 });
    expect(s.stochastic).toBe(true);
    const x = new Float32Array(8).fill(1);
    for (let i = 0; i < 3; i++) s.step(new Float32Array(8), i, x, { fill: (o) => { o.fill(0); draws++; } });
    expect(draws).toBe(3);
    expect(create('DDIM', { steps: 3 }).stochastic).toBe(false);
  });
});

describe('scheduler configs', () => {
  it('accept a model scheduler_config.json as is and refuse options this port does not implement', () => {
    const modelConfig = { _class_name: 'PNDMScheduler', beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear', trained_betas: null, skip_prk_steps: true, steps_offset: 1 };
    expect(create('Euler a', { steps: 20, config: modelConfig }).timesteps.length).toBe(20);
    expect(() => create('Euler', { steps: 20, config: { rescale_betas_zero_snr: true } })).toThrow(/rescale_betas_zero_snr=true is not supported/);
    expect(() => create('Euler', { steps: 20, config: { prediction_type: 'v_prediction' as 'epsilon' } })).toThrow(/predict epsilon/);
    expect(() => create('DPM++ 2M', { steps: 20, config: { algorithm_type: 'sde-dpmsolver++' } })).toThrow(/algorithm_type/);
    expect(() => create('Euler', { steps: 20, config: { use_karras_sigmas: true } })).toThrow(/use_karras_sigmas/);
    expect(() => create('UniPC', { steps: 20, config: { disable_corrector: [0] } })).toThrow(/disable_corrector/);
    expect(() => create('DDIM', { steps: 20, config: { beta_schedule: 'squaredcos_cap_v2' as 'linear' } })).toThrow(/beta_schedule/);
  });
});

describe('hot loop buffers', () => {
  it('x0 and scaled-input buffers are allocated once per run, not per step', () => {
    for (const name of ['DDIM', 'PNDM', 'Euler', 'Euler a', 'LMS', 'LCM']) {
      const s = create(name, { steps: 5 });
      const x = new Float32Array(16).fill(0.3);
      const eps = new Float32Array(16).fill(0.1);
      const noise: NoiseSource = { fill: (o) => o.fill(0) };
      const seen = new Set<Float32Array>();
      const inputs = new Set<Float32Array>();
      for (let i = 0; i < s.timesteps.length; i++) {
        inputs.add(s.scaleModelInput(x, i));
        s.step(eps, i, x, noise);
        seen.add(s.predOriginalSample!);
      }
      expect(seen.size, name).toBe(1);
      expect(inputs.size, name).toBe(1);
    }
  });
});
