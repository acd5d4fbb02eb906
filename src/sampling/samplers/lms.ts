import type { SamplerOptions } from '../sampler.ts';
import type { SchedulerConfig } from '../schedule.ts';
import { SigmaGridSampler } from './euler.ts';

const ORDER = 4;
/** 4-point Gauss-Legendre nodes/weights on [-1, 1]: exact for the cubic LMS integrands. */
const GL_NODES = [-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526];
const GL_WEIGHTS = [0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538];

/**
 * diffusers LMSDiscreteScheduler: linear multistep over the last four derivatives, with
 * coefficients = integrals of Lagrange basis polynomials in sigma (diffusers integrates
 * them numerically with scipy; they are polynomials, so Gauss-Legendre is exact).
 */
export class LmsSampler extends SigmaGridSampler {
  readonly name = 'LMS';
  static readonly defaults: Partial<SchedulerConfig> = { timestep_spacing: 'linspace' };
  private derivatives: Float32Array[] = [];
  private count = 0;
  private readonly coeffs = new Float64Array(ORDER);

  constructor(options: SamplerOptions) {
    super(LmsSampler.defaults, options, 'LMS');
  }

  step(eps: Float32Array, i: number, x: Float32Array): Float32Array {
    const idx = this.enter(i, eps, x);
    const n = x.length;
    const sigma = this.sigmas[idx]!;
    if (this.derivatives.length < ORDER) this.derivatives.push(new Float32Array(n));
    const d = this.derivatives[this.count % ORDER]!;
    this.count++;
    const x0 = this.x0Buffer(n);
    for (let k = 0; k < n; k++) {
      const p = Math.fround(x[k]! - sigma * eps[k]!);
      x0[k] = p;
      d[k] = (x[k]! - p) / sigma;
    }
    // diffusers takes the order from the step index (also after img2img truncation) and
    // zips the coefficients with the derivatives it has, dropping the surplus.
    const order = Math.min(idx + 1, ORDER);
    const used = Math.min(order, this.count);
    for (let c = 0; c < used; c++) this.coeffs[c] = this.coefficient(order, idx, c);
    for (let k = 0; k < n; k++) {
      let acc = x[k]!;
      for (let c = 0; c < used; c++) acc += this.coeffs[c]! * this.derivatives[(this.count - 1 - c) % ORDER]![k]!;
      x[k] = acc;
    }
    return x;
  }

  /** Integral over [sigma_t, sigma_{t+1}] of the Lagrange basis polynomial for t - current. */
  private coefficient(order: number, t: number, current: number): number {
    const s = this.sigmas;
    const a = s[t]!;
    const b = s[t + 1]!;
    const half = (b - a) / 2;
    const mid = (a + b) / 2;
    let sum = 0;
    for (let q = 0; q < GL_NODES.length; q++) {
      const tau = mid + half * GL_NODES[q]!;
      let prod = 1;
      for (let k = 0; k < order; k++) {
        if (k === current) continue;
        prod *= (tau - s[t - k]!) / (s[t - current]! - s[t - k]!);
      }
      sum += GL_WEIGHTS[q]! * prod;
    }
    return sum * half;
  }
}
