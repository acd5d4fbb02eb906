import { RedlineError } from '../../errors.ts';
import { BaseSampler, requireSetting, resolveRun, type SamplerOptions } from '../sampler.ts';
import { multistepSigmaGrid, type SchedulerConfig, vpOfSigma } from '../schedule.ts';

/**
 * diffusers UniPCMultistepScheduler (Zhao et al. 2023), bh2, data prediction, order 2:
 * each step first corrects the previous prediction with the new model output (UniC),
 * then predicts the next sample (UniP). Order drops to 1 on the first and last step.
 */
export class UniPcSampler extends BaseSampler {
  readonly name = 'UniPC';
  static readonly defaults: Partial<SchedulerConfig> = { timestep_spacing: 'linspace', solver_order: 2, lower_order_final: true };
  declare sigmas: Float32Array;
  /** Converted (x0) model outputs: m0 newest, m1 the one before. */
  private m0: Float32Array | null = null;
  private m1: Float32Array | null = null;
  private spare: Float32Array | null = null;
  private lastSample: Float32Array | null = null;
  private thisOrder = 0;
  private lowerOrderNums = 0;

  constructor(options: SamplerOptions) {
    const run = resolveRun(UniPcSampler.defaults, options, 'UniPC');
    if (run.config.solver_order !== 1 && run.config.solver_order !== 2) {
      throw new RedlineError('scheduler_config', `UniPC: solver_order ${run.config.solver_order} is not supported.`, 'Use 2 (default) or 1.');
    }
    requireSetting(run.config, 'solver_type', ['bh2'], 'UniPC');
    requireSetting(run.config, 'predict_x0', [true], 'UniPC');
    const disabled = (run.config as unknown as Record<string, unknown>).disable_corrector;
    if (Array.isArray(disabled) && disabled.length > 0) {
      throw new RedlineError('scheduler_config', 'UniPC: disable_corrector is not supported.', 'Remove it (the corrector runs on every step).');
    }
    requireSetting(run.config, 'use_karras_sigmas', [false], 'UniPC');
    const grid = multistepSigmaGrid(run.config, run.schedule, run.steps);
    super(run, grid.timesteps);
    this.sigmas = grid.sigmas;
  }

  step(eps: Float32Array, i: number, x: Float32Array): Float32Array {
    const idx = this.enter(i, eps, x);
    const n = x.length;
    const s = vpOfSigma(this.sigmas[idx]!);
    // Three rotating buffers: the corrector still reads m1 while conv is filled.
    const conv = this.buffer(n, this.spare);
    for (let k = 0; k < n; k++) conv[k] = (x[k]! - s.sigmaT * eps[k]!) / s.alpha;
    this.predOriginalSample = conv;
    if (idx > 0 && this.lastSample) this.correct(idx, conv, x);
    this.spare = this.m1;
    this.m1 = this.m0;
    this.m0 = conv;
    const remaining = this.config.lower_order_final ? Math.min(this.config.solver_order, this.fullTimesteps.length - idx) : this.config.solver_order;
    this.thisOrder = Math.min(remaining, this.lowerOrderNums + 1);
    this.lastSample = this.buffer(n, this.lastSample);
    this.lastSample.set(x);
    this.predict(idx, x);
    if (this.lowerOrderNums < this.config.solver_order) this.lowerOrderNums++;
    return x;
  }

  /** UniP-bh2: x <- x at sigma[idx+1]. */
  private predict(idx: number, x: Float32Array): void {
    const s0 = vpOfSigma(this.sigmas[idx]!);
    const t = vpOfSigma(this.sigmas[idx + 1]!);
    const h = t.lambda - s0.lambda;
    const hh = -h;
    const hPhi1 = Math.expm1(hh);
    const bH = Math.expm1(hh);
    const ratio = t.sigmaT / s0.sigmaT;
    const m0 = this.m0!;
    if (this.thisOrder === 2) {
      const s1 = vpOfSigma(this.sigmas[idx - 1]!);
      const rk = (s1.lambda - s0.lambda) / h;
      const m1 = this.m1!;
      for (let k = 0; k < x.length; k++) {
        const d1 = (m1[k]! - m0[k]!) / rk;
        x[k] = ratio * x[k]! - t.alpha * hPhi1 * m0[k]! - t.alpha * bH * 0.5 * d1;
      }
    } else {
      for (let k = 0; k < x.length; k++) x[k] = ratio * x[k]! - t.alpha * hPhi1 * m0[k]!;
    }
  }

  /** UniC-bh2: refines the sample the last predictor produced (x) using model output `conv` at it. */
  private correct(idx: number, conv: Float32Array, x: Float32Array): void {
    const t = vpOfSigma(this.sigmas[idx]!);
    const s0 = vpOfSigma(this.sigmas[idx - 1]!);
    const h = t.lambda - s0.lambda;
    const hh = -h;
    const hPhi1 = Math.expm1(hh);
    const bH = Math.expm1(hh);
    const ratio = t.sigmaT / s0.sigmaT;
    const order = this.thisOrder;
    // b_k = h_phi_k * k! / B_h, h_phi_1 = expm1(hh)/hh - 1, h_phi_{k+1} = h_phi_k/hh - 1/(k+1)!
    const hPhiK1 = hPhi1 / hh - 1;
    const b1 = hPhiK1 / bH;
    let rhoPrev = 0;
    let rhoT = 0.5;
    let rk = 0;
    if (order === 2) {
      const hPhiK2 = hPhiK1 / hh - 1 / 2;
      const b2 = (hPhiK2 * 2) / bH;
      const s1 = vpOfSigma(this.sigmas[idx - 2]!);
      rk = (s1.lambda - s0.lambda) / h;
      // Solve [[1, 1], [rk, 1]] [rhoPrev, rhoT] = [b1, b2].
      rhoPrev = (b1 - b2) / (1 - rk);
      rhoT = b1 - rhoPrev;
    }
    const last = this.lastSample!;
    const m0 = this.m0!;
    const m1 = this.m1;
    for (let k = 0; k < x.length; k++) {
      const base = ratio * last[k]! - t.alpha * hPhi1 * m0[k]!;
      const corr = order === 2 ? (rhoPrev * (m1![k]! - m0[k]!)) / rk : 0;
      x[k] = base - t.alpha * bH * (corr + rhoT * (conv[k]! - m0[k]!));
    }
  }

  addNoise(original: Float32Array, noise: Float32Array, out?: Float32Array): Float32Array {
    const { alpha, sigmaT } = vpOfSigma(this.sigmas[this.beginIndex]!);
    const dst = out ?? new Float32Array(original.length);
    for (let k = 0; k < original.length; k++) dst[k] = alpha * original[k]! + sigmaT * noise[k]!;
    return dst;
  }
}
