import { RedlineError } from '../../errors.ts';
import { BaseSampler, requireSetting, resolveRun, type SamplerOptions } from '../sampler.ts';
import { multistepSigmaGrid, type SchedulerConfig, vpOfSigma } from '../schedule.ts';

/**
 * diffusers DPMSolverMultistepScheduler, algorithm dpmsolver++ order 2 midpoint
 * (Lu et al. 2022), data prediction. A1111 "DPM++ 2M", and with Karras sigmas
 * "DPM++ 2M Karras". First-order on the first step and on the last (final sigma 0).
 */
export class DpmPP2MSampler extends BaseSampler {
  readonly name: string;
  static readonly defaults: Partial<SchedulerConfig> = { timestep_spacing: 'linspace', solver_order: 2, lower_order_final: true, use_karras_sigmas: false };
  declare sigmas: Float32Array;
  private m0: Float32Array | null = null;
  private m1: Float32Array | null = null;
  private lowerOrderNums = 0;

  constructor(options: SamplerOptions, karras = false) {
    const name = karras ? 'DPM++ 2M Karras' : 'DPM++ 2M';
    const run = resolveRun({ ...DpmPP2MSampler.defaults, use_karras_sigmas: karras }, options, name);
    requireSetting(run.config, 'algorithm_type', ['dpmsolver++'], name);
    requireSetting(run.config, 'solver_type', ['midpoint'], name);
    const grid = multistepSigmaGrid(run.config, run.schedule, run.steps);
    super(run, grid.timesteps);
    this.name = name;
    if (run.config.solver_order !== 1 && run.config.solver_order !== 2) {
      throw new RedlineError('scheduler_config', `${name}: solver_order ${run.config.solver_order} is not supported.`, 'Use 2 (2M) or 1.');
    }
    this.sigmas = grid.sigmas;
  }

  step(eps: Float32Array, i: number, x: Float32Array): Float32Array {
    const idx = this.enter(i, eps, x);
    const n = x.length;
    const last = this.fullTimesteps.length;
    const lowerOrderFinal = idx === last - 1;
    const s0 = vpOfSigma(this.sigmas[idx]!);
    const t = vpOfSigma(this.sigmas[idx + 1]!);
    // Rotate history: m1 <- m0, m0 <- x0 of this step.
    const older = this.m1;
    this.m1 = this.m0;
    this.m0 = this.buffer(n, older);
    const m0 = this.m0;
    for (let k = 0; k < n; k++) m0[k] = (x[k]! - s0.sigmaT * eps[k]!) / s0.alpha;
    this.predOriginalSample = m0;
    const h = t.lambda - s0.lambda;
    const ratio = t.sigmaT / s0.sigmaT;
    const phi = t.alpha * (Math.exp(-h) - 1);
    const firstOrder = this.config.solver_order === 1 || this.lowerOrderNums < 1 || lowerOrderFinal;
    if (firstOrder) {
      for (let k = 0; k < n; k++) x[k] = ratio * x[k]! - phi * m0[k]!;
    } else {
      const s1 = vpOfSigma(this.sigmas[idx - 1]!);
      const r0 = (s0.lambda - s1.lambda) / h;
      const m1 = this.m1!;
      for (let k = 0; k < n; k++) {
        const d1 = (m0[k]! - m1[k]!) / r0;
        x[k] = ratio * x[k]! - phi * m0[k]! - 0.5 * phi * d1;
      }
    }
    if (this.lowerOrderNums < this.config.solver_order) this.lowerOrderNums++;
    return x;
  }

  addNoise(original: Float32Array, noise: Float32Array, out?: Float32Array): Float32Array {
    const { alpha, sigmaT } = vpOfSigma(this.sigmas[this.beginIndex]!);
    const dst = out ?? new Float32Array(original.length);
    for (let k = 0; k < original.length; k++) dst[k] = alpha * original[k]! + sigmaT * noise[k]!;
    return dst;
  }
}
