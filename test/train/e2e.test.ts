// End to end: a LoRA trained by `train()` on a procedurally generated dataset, on the golden
// tiny SD 1.5-shaped model, on the CPU. Shows that the loss falls, that the learned effect in
// generated images grows with the adapter strength, that the kohya file reloads through the
// adapter loader, and that an interrupted and resumed run ends with exactly the weights of
// an uninterrupted one.
//
// The golden model's VAE has random weights, so the decoded colours of any latent are near
// grey and the splatter paint itself cannot appear. The measurable effect is therefore how
// close a generated image's mean colour comes to the mean colour of the training images as
// this VAE reproduces them (decoded cached latents): that is what the LoRA learns to generate.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildModuleIndex, describeMatch, loadAdapter, parseSidecar } from '../../src/adapters/index.ts';
import { openCheckpoint } from '../../src/models/checkpoint/index.ts';
import { buildVaeDecoder } from '../../src/models/vae.ts';
import type { RgbImage } from '../../src/pipeline/image.ts';
import { compileGraph } from '../../src/runtime/compile.ts';
import { readSafetensors, SafetensorsFile } from '../../src/tensor/safetensors.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import { loadTrainConfig, type TrainConfig } from '../../src/train/data/config.ts';
import { writeSceneDataset } from '../../src/train/procedural/dataset.ts';
import type { Calibration } from '../../src/train/run/calibrate.ts';
import { calibrateAndWriteSidecar, RunModel } from '../../src/train/run/samples.ts';
import { StepSessionCache, train, type TrainResult } from '../../src/train/run/trainer.ts';
import { goldenPath } from '../helpers/golden.ts';

const STEPS = 240;
const CHECKPOINT_AT = 200;
const root = mkdtempSync(join(tmpdir(), 'redline-e2e-'));
const sessions = new StepSessionCache();
let cfg: TrainConfig;
let main: TrainResult;
let calibration: Calibration | null = null;
let sidecarPath = '';

function meanColour(img: RgbImage): [number, number, number] {
  const s = [0, 0, 0];
  const n = img.width * img.height;
  for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) s[c]! += img.data[i * 3 + c]!;
  return [s[0]! / n, s[1]! / n, s[2]! / n];
}

/** Mean colour of the training images as the model's VAE decodes their cached latents. */
async function reconstructionColour(latentDir: string): Promise<[number, number, number]> {
  const ck = openCheckpoint(goldenPath('models', 'diffusers'));
  const dec = await compileGraph(buildVaeDecoder(ck.configs.vae, ck.components.vae));
  const sum = [0, 0, 0];
  const files = readdirSync(latentDir);
  for (const f of files) {
    const mean = readSafetensors(join(latentDir, f)).get('mean')!;
    const [, h, w] = mean.shape as [number, number, number];
    const img = (await dec.run({ latent: new Tensor('f32', [1, 4, h, w], mean.toFloat32()) }, ['image'])).image!.toFloat32();
    const n = 64 * h * w;
    for (let c = 0; c < 3; c++) {
      let s = 0;
      for (let i = 0; i < n; i++) s += Math.min(255, Math.max(0, Math.round((img[c * n + i]! / 2 + 0.5) * 255)));
      sum[c]! += s / n;
    }
  }
  await dec.release();
  ck.close();
  return [sum[0]! / files.length, sum[1]! / files.length, sum[2]! / files.length];
}

beforeAll(async () => {
  await writeSceneDataset(join(root, 'scenes'), { count: 16, seed: 7, size: 64, splatter: 'graded', intensityTags: true });
  writeFileSync(join(root, 'train.toml'), `
[training]
pretrained_model_name_or_path = "${goldenPath('models', 'diffusers')}"
output_dir = "out"
output_name = "splatter"
network_dim = 4
network_alpha = 4
network_train_unet_only = true
learning_rate = 1e-3
lr_scheduler = "constant_with_warmup"
lr_warmup_steps = 10
max_train_steps = ${STEPS}
save_every_n_steps = ${CHECKPOINT_AT}
seed = 11
category = "graphic-injury"

[general]
resolution = 64
batch_size = 2
shuffle_caption = true
keep_tokens = 1
caption_dropout_rate = 0.05

[[datasets]]
  [[datasets.subsets]]
  image_dir = "scenes"
  num_repeats = 2

[calibration]
holdout_per_level = 1
strengths = [0, 0.5, 1]
steps = 8
`);
  cfg = loadTrainConfig(join(root, 'train.toml'));
  const runModel = new RunModel(cfg);
  try {
    main = await train(cfg, {
      stepSessions: sessions,
      afterTraining: async (ctx) => {
        const target = await reconstructionColour(join(cfg.outputDir, 'latent-cache'));
        const closeness = (img: RgbImage): number => -Math.hypot(...meanColour(img).map((v, c) => v - target[c]!));
        const r = await calibrateAndWriteSidecar(runModel, ctx, { effect: { name: 'closeness to the VAE-reconstructed training colour', measure: closeness } });
        calibration = r!.calibration;
        sidecarPath = r!.sidecar;
      },
    });
  } finally {
    await runModel.release();
  }
}, 600_000);

afterAll(async () => {
  await sessions.release();
  rmSync(root, { recursive: true, force: true });
});

describe('LoRA training end to end (golden tiny model, CPU)', () => {
  it('trains the configured steps and the loss falls', () => {
    expect(main.interrupted).toBe(false);
    expect(main.steps).toBe(STEPS);
    expect(main.trainImages).toBe(12); // 16 scenes, one per intensity level held out
    const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
    const first = mean(main.losses.slice(0, 40));
    const last = mean(main.losses.slice(-40));
    console.log(`loss: first 40 steps ${first.toFixed(4)}, last 40 ${last.toFixed(4)}; ${main.stepsPerSecond.toFixed(2)} step/s`);
    expect(last).toBeLessThan(first * 0.95);
    const csv = readFileSync(main.lossCsv, 'utf8').trim().split('\n');
    expect(csv).toHaveLength(STEPS + 1);
  });

  it('writes a kohya LoRA that the adapter loader applies to every module', () => {
    const f = SafetensorsFile.open(main.output);
    try {
      expect(f.metadata).toMatchObject({ ss_network_dim: '4', ss_network_alpha: '4', ss_base_model_version: 'sd_v1', ss_resolution: '(64, 64)', ss_num_train_images: '24', ss_steps: String(STEPS) });
      const tags = JSON.parse(f.metadata.ss_tag_frequency!) as Record<string, Record<string, number>>;
      expect(Object.keys(tags)).toEqual(['scenes']);
      expect(Object.keys(tags.scenes!).some((t) => t.includes('intensity'))).toBe(false);
      expect(f.keys().every((k) => /^lora_unet_.+\.(lora_down\.weight|lora_up\.weight|alpha)$/.test(k))).toBe(true);
    } finally {
      f.close();
    }
    const ck = openCheckpoint(goldenPath('models', 'diffusers'));
    try {
      const adapter = loadAdapter(main.output, buildModuleIndex(ck));
      const keys = SafetensorsFile.open(main.output).keys().length;
      expect(describeMatch(adapter)).toBe(`splatter: applied ${keys} of ${keys} keys to ${keys / 3} modules`);
    } finally {
      ck.close();
    }
  });

  it('the learned effect grows with the adapter strength', () => {
    const curve = calibration!.curve;
    console.log(`effect by strength: ${curve.map((p) => `${p.strength}: ${p.effect.toFixed(2)}`).join(', ')}`);
    expect(curve.map((p) => p.strength)).toEqual([0, 0.5, 1]);
    expect(curve[1]!.effect).toBeGreaterThan(curve[0]!.effect);
    expect(curve[2]!.effect).toBeGreaterThan(curve[1]!.effect);
  });

  it('writes the calibration into a sidecar the registry accepts', () => {
    const { sidecar, problems } = parseSidecar(JSON.parse(readFileSync(sidecarPath, 'utf8')));
    expect(problems).toEqual([]);
    expect(sidecar!.category).toBe('graphic-injury');
    // the adapter itself declares the category too, so a copy without its sidecar is refused
    const lora = SafetensorsFile.open(main.output);
    try {
      expect(lora.metadata['redline.category']).toBe('graphic-injury');
    } finally {
      lora.close();
    }
    expect(Object.keys(sidecar!.intensity!)).toEqual(['0', '1', '2', '3']);
    for (const v of Object.values(sidecar!.intensity!)) expect(v).toBeGreaterThanOrEqual(0);
    expect(sidecar!.notes).toMatch(/4 held-out captions/);
  });

  it('an interrupted and resumed run ends with exactly the uninterrupted weights', async () => {
    const ckDir = main.checkpoints.find((c) => c.endsWith(`step-${String(CHECKPOINT_AT).padStart(6, '0')}`))!;
    expect(ckDir).toBeTruthy();
    const second = { ...cfg, outputDir: join(root, 'resumed') };
    const interrupted = await train(second, { resume: ckDir, stopAtStep: CHECKPOINT_AT + 15, stepSessions: sessions });
    expect(interrupted.interrupted).toBe(true);
    expect(interrupted.steps).toBe(CHECKPOINT_AT + 15);
    const resumed = await train(second, { resume: interrupted.output, stepSessions: sessions });
    expect(resumed.steps).toBe(STEPS);
    const a = readSafetensors(main.output);
    const b = readSafetensors(resumed.output);
    expect([...b.keys()]).toEqual([...a.keys()]);
    for (const [k, t] of a) expect(Buffer.from(b.get(k)!.bytes()).equals(Buffer.from(t.bytes())), k).toBe(true);
    // the resumed loss log carries on from the checkpoint's rows
    expect(resumed.losses.slice(-(STEPS - CHECKPOINT_AT - 15))).toEqual(main.losses.slice(-(STEPS - CHECKPOINT_AT - 15)));
  });
});
