// Sample images during training: the adapter saved at a step, applied at strength 1 to the
// config's sample prompts, through the same pipeline that serves generation.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodePng } from '../../pipeline/image.ts';
import { Generator } from '../../pipeline/generate.ts';
import { StableDiffusionModel } from '../../pipeline/model.ts';
import type { SessionOptions } from '../../runtime/session.ts';
import type { TrainConfig } from '../data/config.ts';
import { type Calibration, calibrate, calibrationNotes, type EffectMeasure, writeSidecar } from './calibrate.ts';
import type { AfterTrainingContext, SampleContext } from './trainer.ts';

/** The sample size: sample_size, else the first dataset's resolution. */
export function sampleSize(cfg: TrainConfig): [number, number] {
  const s = cfg.sampleSize ?? cfg.datasets[0]!.resolution;
  return [s[0], s[1]];
}

/** Loads the base model for sampling on first use and keeps it for the run. */
export class RunModel {
  private model: Promise<StableDiffusionModel> | null = null;

  constructor(private readonly cfg: TrainConfig, private readonly opts: SessionOptions = {}) {}

  get(): Promise<StableDiffusionModel> {
    this.model ??= StableDiffusionModel.load(this.cfg.pretrainedModel, { ...(this.opts.provider ? { provider: this.opts.provider } : {}) });
    return this.model;
  }

  async release(): Promise<void> {
    if (this.model) await (await this.model).release();
    this.model = null;
  }
}

export async function writeSamples(run: RunModel, ctx: SampleContext): Promise<string[]> {
  const model = await run.get();
  const cfg = ctx.config;
  const [width, height] = sampleSize(cfg);
  const dir = join(cfg.outputDir, 'samples');
  mkdirSync(dir, { recursive: true });
  const gen = new Generator(model);
  const files: string[] = [];
  for (const [i, prompt] of cfg.samplePrompts.entries()) {
    const [img] = await gen.generate({ prompt, adapters: [{ path: ctx.adapterPath, te: 1, unet: 1 }], seed: cfg.seed + i, steps: cfg.sampleSteps, cfgScale: cfg.sampleCfgScale, sampler: cfg.sampleSampler, width, height, rng: 'cpu' });
    const f = join(dir, `${cfg.outputName}_${String(ctx.step).padStart(6, '0')}_${String(i).padStart(2, '0')}.png`);
    writeFileSync(f, await encodePng(img!.image));
    files.push(f);
  }
  return files;
}

/** Calibrates the trained adapter and writes its sidecar NAME.json. */
export async function calibrateAndWriteSidecar(
  run: RunModel,
  ctx: AfterTrainingContext,
  opts: { onProgress?: (msg: string) => void; effect?: { name: string; measure: EffectMeasure } } = {},
): Promise<{ sidecar: string; calibration: Calibration | null } | null> {
  const cfg = ctx.config;
  const cal = cfg.calibration;
  const path = ctx.adapterPath.replace(/\.safetensors$/, '.json');
  if (!cal) {
    if (!cfg.category) return null;
    writeSidecar(path, { category: cfg.category });
    return { sidecar: path, calibration: null };
  }
  const [width, height] = sampleSize(cfg);
  const c = await calibrate(await run.get(), ctx.adapterPath, ctx.holdout, cal, {
    width,
    height,
    ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    ...(opts.effect ? { effect: opts.effect.measure } : {}),
  });
  writeSidecar(path, { ...(cfg.category ? { category: cfg.category } : {}), intensity: c.levels, notes: calibrationNotes(c, opts.effect?.name ?? cal.effect, ctx.holdout.length) });
  return { sidecar: path, calibration: c };
}
