// Learning-rate schedules as diffusers' get_scheduler defines them (LambdaLR factors on the
// base lr), indexed by the optimizer step about to be taken (0-based).

import { RedlineError } from '../../errors.ts';

export type ScheduleName = 'constant' | 'constant_with_warmup' | 'linear' | 'cosine' | 'cosine_with_restarts';

export interface Schedule {
  name: ScheduleName;
  lr: number;
  warmupSteps?: number;
  /** Needed by linear, cosine and cosine_with_restarts. */
  totalSteps?: number;
  /** cosine_with_restarts: number of hard restarts (diffusers num_cycles, default 1). */
  cycles?: number;
}

export const SCHEDULES: readonly ScheduleName[] = ['constant', 'constant_with_warmup', 'linear', 'cosine', 'cosine_with_restarts'];

/** Learning rate for optimizer step `step` (0-based). */
export function lrAt(s: Schedule, step: number): number {
  if (!SCHEDULES.includes(s.name)) throw new RedlineError('train_config', `Unknown lr_scheduler "${s.name}".`, `Use one of ${SCHEDULES.join(', ')}.`);
  const warm = s.warmupSteps ?? 0;
  if (s.name === 'constant') return s.lr;
  if (step < warm) return (s.lr * step) / Math.max(1, warm);
  if (s.name === 'constant_with_warmup') return s.lr;
  const total = s.totalSteps;
  if (total === undefined || total <= warm) throw new RedlineError('train_config', `lr_scheduler ${s.name} needs max_train_steps greater than the warmup steps.`);
  const progress = (step - warm) / Math.max(1, total - warm);
  switch (s.name) {
    case 'linear':
      return s.lr * Math.max(0, (total - step) / Math.max(1, total - warm));
    case 'cosine':
      return s.lr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * progress)));
    case 'cosine_with_restarts': {
      if (progress >= 1) return 0;
      const cycles = s.cycles ?? 1;
      return s.lr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * ((cycles * progress) % 1))));
    }
  }
}
