import { type NoiseSource, type SamplerOptions } from '../sampler.ts';
import type { SchedulerConfig } from '../schedule.ts';
import { SigmaGridSampler } from './euler.ts';

/**
 * diffusers EulerAncestralDiscreteScheduler (A1111 "Euler a"): an Euler step down to
 * sigma_down, then fresh noise of std sigma_up. Noise is drawn only when sigma_up > 0
 * (k-diffusion/A1111 skip the last step's draw, diffusers draws and multiplies by 0), so
 * the per-image noise stream advances exactly as in A1111.
 */
export class EulerAncestralSampler extends SigmaGridSampler {
  readonly name = 'Euler a';
  static readonly defaults: Partial<SchedulerConfig> = { timestep_spacing: 'linspace' };
  private noiseBuf: Float32Array | null = null;

  constructor(options: SamplerOptions) {
    super(EulerAncestralSampler.defaults, options, 'Euler a');
    this.stochastic = true;
  }

  step(eps: Float32Array, i: number, x: Float32Array, noise?: NoiseSource): Float32Array {
    const idx = this.enter(i, eps, x);
    const from = this.sigmas[idx]!;
    const to = this.sigmas[idx + 1]!;
    const up = Math.sqrt((to * to * (from * from - to * to)) / (from * from));
    const down = Math.sqrt(to * to - up * up);
    const dt = down - from;
    let z: Float32Array | null = null;
    if (up > 0) {
      z = this.noiseBuf = this.buffer(x.length, this.noiseBuf);
      this.requireNoise(noise).fill(z);
    }
    const x0 = this.x0Buffer(x.length);
    for (let k = 0; k < x.length; k++) {
      const p = Math.fround(x[k]! - from * eps[k]!);
      x0[k] = p;
      let next = x[k]! + ((x[k]! - p) / from) * dt;
      if (z) next += z[k]! * up;
      x[k] = next;
    }
    return x;
  }
}
