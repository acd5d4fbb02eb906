// AdamW exactly as torch.optim.AdamW (decoupled weight decay, bias correction in the
// denominator), over Float32Arrays in place. Per-step scalars are computed in float64 (JS
// numbers): 1 - 0.999 in float32 alone moves exp_avg_sq by 1.3e-5 relative. Element
// arithmetic rounds to float32 at the same points torch's CPU kernel does.

import { RedlineError } from '../../errors.ts';

export interface AdamWOptions {
  lr: number;
  betas?: readonly [number, number];
  eps?: number;
  weightDecay?: number;
}

export interface AdamWState {
  step: number;
  expAvg: Map<string, Float32Array>;
  expAvgSq: Map<string, Float32Array>;
}

const f = Math.fround;

export class AdamW {
  readonly betas: readonly [number, number];
  readonly eps: number;
  readonly weightDecay: number;
  lr: number;
  private state: AdamWState;

  /** `params` are updated in place by step(). */
  constructor(readonly params: Map<string, Float32Array>, opts: AdamWOptions) {
    this.lr = opts.lr;
    this.betas = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 1e-2;
    const [b1, b2] = this.betas;
    if (!(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1)) throw new RedlineError('train_config', `AdamW betas must lie in [0, 1), got [${b1}, ${b2}].`);
    if (!(this.eps > 0)) throw new RedlineError('train_config', `AdamW eps must be positive, got ${this.eps}.`);
    this.state = { step: 0, expAvg: new Map(), expAvgSq: new Map() };
    for (const [k, v] of params) {
      this.state.expAvg.set(k, new Float32Array(v.length));
      this.state.expAvgSq.set(k, new Float32Array(v.length));
    }
  }

  get stepCount(): number {
    return this.state.step;
  }

  /** Optimizer state (moments and step), for checkpoints; arrays are live. */
  stateDict(): AdamWState {
    return this.state;
  }

  loadStateDict(s: AdamWState): void {
    for (const [k, v] of this.params) {
      const m = s.expAvg.get(k);
      const q = s.expAvgSq.get(k);
      if (!m || !q || m.length !== v.length || q.length !== v.length) throw new RedlineError('train_resume', `Optimizer state has no (or wrongly sized) moments for ${k}.`, 'The checkpoint belongs to another network configuration.');
    }
    this.state = { step: s.step, expAvg: new Map(s.expAvg), expAvgSq: new Map(s.expAvgSq) };
  }

  /** One update with `grads` (every param must have one), at learning rate `lr`
   * (default: this.lr). */
  step(grads: ReadonlyMap<string, Float32Array>, lr = this.lr): void {
    const t = ++this.state.step;
    const [b1, b2] = this.betas;
    const decay = f(1 - lr * this.weightDecay);
    const bc1 = 1 - b1 ** t;
    const bc2 = 1 - b2 ** t;
    const stepSize = f(lr / bc1);
    const bc2Sqrt = f(Math.sqrt(bc2));
    const eps = f(this.eps);
    const c1 = f(1 - b1);
    const c2 = f(1 - b2);
    const fb2 = f(b2);
    for (const [k, p] of this.params) {
      const g = grads.get(k);
      if (!g) throw new RedlineError('train_step', `No gradient for ${k}.`);
      if (g.length !== p.length) throw new RedlineError('train_step', `Gradient for ${k} holds ${g.length} values, the tensor ${p.length}.`);
      const m = this.state.expAvg.get(k)!;
      const v = this.state.expAvgSq.get(k)!;
      for (let i = 0; i < p.length; i++) {
        const gi = g[i]!;
        const pi = f(p[i]! * decay);
        // torch's CPU kernels: lerp = m + w (g - m); addcmul = v + (c g) g; addcdiv = p + (s m) / d
        const mi = f(m[i]! + f(c1 * f(gi - m[i]!)));
        const vi = f(f(v[i]! * fb2) + f(f(c2 * gi) * gi));
        m[i] = mi;
        v[i] = vi;
        const denom = f(f(f(Math.sqrt(vi)) / bc2Sqrt) + eps);
        p[i] = f(pi - f(f(stepSize * mi) / denom));
      }
    }
  }
}
