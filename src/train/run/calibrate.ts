// Graded intensity as a training signal. Captions carry intensity:0..3; after training,
// the adapter is applied at a grid of strengths to the held-out captions, the effect is
// measured on the generated images, and each level is mapped to the strength at which the
// adapter reproduces the effect measured on that level's real held-out images. The map goes
// into the adapter's sidecar NAME.json, so "level 2" means the same amount with any adapter.
import { writeFileSync } from 'node:fs';
import { RedlineError } from '../../errors.ts';
import { parseSidecar, type AdapterSidecar } from '../../adapters/registry.ts';
import { decodeImage, type RgbImage } from '../../pipeline/image.ts';
import { Generator } from '../../pipeline/generate.ts';
import type { StableDiffusionModel } from '../../pipeline/model.ts';
import { analyzeScene } from '../procedural/scenes.ts';
import type { CalibrationConfig } from '../data/config.ts';
import type { ImageItem } from '../data/dataset.ts';

/** A measurable property of an image that grows with the adapter's effect. */
export type EffectMeasure = (image: RgbImage) => number;

export const EFFECTS: Record<CalibrationConfig['effect'], EffectMeasure> = {
  /** Fraction of pixels of the demo adapter's paint colour (procedural scenes' own rule). */
  splatter_coverage: (img) => analyzeScene(img.data, img.width, img.height).splatterCoverage,
};

export interface CurvePoint {
  strength: number;
  effect: number;
}

export interface Calibration {
  /** Mean effect of the generated held-out prompts at each strength. */
  curve: CurvePoint[];
  /** Mean effect of the real held-out images per level. */
  targets: Record<string, number>;
  /** Level -> strength (the sidecar's `intensity`). */
  levels: Record<string, number>;
  /** Levels the adapter does not reach within the strength grid (mapped to its top). */
  unreached: string[];
}

/** Strength at which the effect first reaches `target`, on the running maximum of the
 * curve (the effect may dip between grid points), linearly interpolated between points. */
export function strengthFor(curve: readonly CurvePoint[], target: number): { strength: number; reached: boolean } {
  const pts = [...curve].sort((a, b) => a.strength - b.strength);
  let best = -Infinity;
  const mono = pts.map((p) => ({ strength: p.strength, effect: (best = Math.max(best, p.effect)) }));
  if (target <= mono[0]!.effect) return { strength: mono[0]!.strength, reached: true };
  for (let i = 1; i < mono.length; i++) {
    const a = mono[i - 1]!;
    const b = mono[i]!;
    if (b.effect >= target) {
      const t = b.effect === a.effect ? 0 : (target - a.effect) / (b.effect - a.effect);
      return { strength: a.strength + t * (b.strength - a.strength), reached: true };
    }
  }
  return { strength: mono[mono.length - 1]!.strength, reached: false };
}

export function levelStrengths(curve: readonly CurvePoint[], targets: Record<string, number>): { levels: Record<string, number>; unreached: string[] } {
  const levels: Record<string, number> = {};
  const unreached: string[] = [];
  // the policy requires strengths that do not decrease with the level: a level whose
  // held-out images show less effect than a lower level's keeps the lower level's strength
  let floor = 0;
  for (const level of Object.keys(targets).sort((a, b) => Number(a) - Number(b))) {
    const { strength, reached } = strengthFor(curve, targets[level]!);
    floor = Math.max(floor, Math.round(strength * 1000) / 1000);
    levels[level] = floor;
    if (!reached) unreached.push(level);
  }
  return { levels, unreached };
}

export interface CalibrateOptions {
  width: number;
  height: number;
  effect?: EffectMeasure;
  onProgress?: (msg: string) => void;
}

/** Measures the adapter's effect curve on the held-out captions and maps levels to strengths. */
export async function calibrate(model: StableDiffusionModel, adapterPath: string, holdout: readonly ImageItem[], cal: CalibrationConfig, opts: CalibrateOptions): Promise<Calibration> {
  if (!holdout.length) throw new RedlineError('train_config', 'The calibration has no held-out images.');
  const effect = opts.effect ?? EFFECTS[cal.effect];
  const targetsByLevel = new Map<number, number[]>();
  for (const it of holdout) {
    const img = await decodeImage(it.path, { width: opts.width, height: opts.height });
    targetsByLevel.set(it.intensity!, [...(targetsByLevel.get(it.intensity!) ?? []), effect(img)]);
  }
  const targets: Record<string, number> = {};
  for (const [level, xs] of [...targetsByLevel].sort((a, b) => a[0] - b[0])) targets[String(level)] = xs.reduce((a, b) => a + b, 0) / xs.length;
  const curve = await effectCurve(model, adapterPath, holdout.map((h) => h.caption), cal, { ...opts, effect });
  return { curve, targets, ...levelStrengths(curve, targets) };
}

/** The mean effect over `prompts` at each strength of the grid (adapter on TE and UNet). */
export async function effectCurve(model: StableDiffusionModel, adapterPath: string, prompts: readonly string[], cal: Pick<CalibrationConfig, 'strengths' | 'steps' | 'cfgScale' | 'sampler' | 'seed'>, opts: CalibrateOptions & { effect: EffectMeasure }): Promise<CurvePoint[]> {
  const gen = new Generator(model);
  const curve: CurvePoint[] = [];
  for (const strength of cal.strengths) {
    opts.onProgress?.(`calibration: strength ${strength}`);
    const adapters = strength === 0 ? [] : [{ path: adapterPath, te: strength, unet: strength }];
    let sum = 0;
    for (const [i, prompt] of prompts.entries()) {
      const [img] = await gen.generate({ prompt, adapters, seed: cal.seed + i, steps: cal.steps, cfgScale: cal.cfgScale, sampler: cal.sampler, width: opts.width, height: opts.height, rng: 'cpu' });
      sum += opts.effect(img!.image);
    }
    curve.push({ strength, effect: sum / prompts.length });
  }
  return curve;
}

/** Writes NAME.json next to the adapter in the registry's sidecar schema (checked with the
 * registry's own validator, so the file is never one the registry would refuse). */
export function writeSidecar(path: string, sidecar: AdapterSidecar): void {
  const { problems } = parseSidecar(sidecar);
  if (problems.length) throw new Error(`sidecar for ${path} is invalid: ${problems.join('; ')}`);
  writeFileSync(path, JSON.stringify(sidecar, null, 2) + '\n');
}

export function calibrationNotes(c: Calibration, effectName: string, prompts: number): string {
  const curve = c.curve.map((p) => `${p.strength}:${p.effect.toPrecision(3)}`).join(' ');
  const targets = Object.entries(c.targets).map(([l, v]) => `${l}:${v.toPrecision(3)}`).join(' ');
  const un = c.unreached.length ? ` Levels ${c.unreached.join(', ')} were not reached within the strength grid.` : '';
  return `Calibrated by Redline on ${prompts} held-out captions; ${effectName} at strength ${curve}; held-out images per level ${targets}.${un}`;
}
