// Training goldens (PyTorch + diffusers + PEFT, CPU float32): LoRA gradients (plain,
// min-SNR-gamma, noise offset), AdamW steps, full UNet and VAE decoder gradients. Batch,
// configs and per-tensor tolerances come from the golden set (batch.json, manifest.json).
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Graph } from '../../src/graph/graph.ts';
import { exportOnnx } from '../../src/graph/onnx.ts';
import { adamwScalars, appendAdamW } from '../../src/train/optim/graph-adamw.ts';
import { openCheckpoint } from '../../src/models/checkpoint/load.ts';
import { AdamW } from '../../src/train/optim/adamw.ts';
import { buildLoraStep, buildUnetFullStep, buildVaeDecoderStep } from '../../src/train/step/graphs.ts';
import { loraFromPeftFile } from '../../src/train/step/lora.ts';
import { addNoise, minSnrWeights, offsetNoise, snr } from '../../src/train/step/noise.ts';
import { TrainStepSession, type StepBatch } from '../../src/train/step/session.ts';
import { SafetensorsFile } from '../../src/tensor/safetensors.ts';
import { goldenJson, goldenPath } from '../helpers/golden.ts';

interface Stats { max_abs: number; atol: number; structurally_zero?: boolean }
interface FileEntry { tensors: Record<string, { shape: number[] }>; tensor_stats: Record<string, Stats>; group_max_abs: Record<string, number>; structurally_zero?: string[] }
interface Batch {
  config: { timesteps: number[]; latent_hw: [number, number]; min_snr_gamma: number; noise_offset: number; adamw: { lr: number; betas: [number, number]; eps: number; weight_decay: number } };
  input_ids: number[][];
  timesteps: number[];
  losses: Record<string, number>;
}

const manifest = goldenJson<{ files: Record<string, FileEntry> }>('manifest.json');
const batch = goldenJson<Batch>('training', 'batch.json');
const entry = (f: string): FileEntry => manifest.files[`training/${f}`]!;
const open = (f: string): SafetensorsFile => SafetensorsFile.open(goldenPath('training', f));

/** Worst |mine - golden| / atol over the tensor (atol from the manifest; <= 1 passes). */
function excess(mine: Float32Array, golden: Float32Array, atol: number): number {
  expect(mine.length).toBe(golden.length);
  let worst = 0;
  for (let i = 0; i < mine.length; i++) worst = Math.max(worst, Math.abs(mine[i]! - golden[i]!) / atol);
  return worst;
}

/** Compares every golden tensor `<prefix><key>` with grads.get(key) at its manifest atol. */
function compareGrads(grads: Map<string, Float32Array>, file: SafetensorsFile, e: FileEntry, prefix: string, keys: readonly string[]): void {
  const bad: string[] = [];
  for (const key of keys) {
    const name = prefix + key;
    const stats = e.tensor_stats[name];
    expect(stats, name).toBeDefined();
    const mine = grads.get(key);
    expect(mine, `gradient for ${key}`).toBeDefined();
    const r = excess(mine!, file.getFloat32(name), stats!.atol);
    if (r > 1) bad.push(`${key}: ${r.toFixed(2)}x atol`);
  }
  expect(bad).toEqual([]);
}

const model = openCheckpoint(goldenPath('models', 'diffusers'));
const loraFile = goldenPath('lora', 'lora_peft.safetensors');
const grads = open('lora_grads.safetensors');
const [h, w] = batch.config.latent_hw;
const x0 = grads.getFloat32('x0');
const eps = grads.getFloat32('eps');
const loraKeys = SafetensorsFile.open(loraFile).keys().filter((k) => /\.lora_[AB]\.weight$/.test(k));

describe('CPU side of the step (noise.ts) equals diffusers', () => {
  it('add_noise gives the golden noisy latents exactly', () => {
    const noisy = addNoise(x0, eps, batch.timesteps);
    expect(excess(noisy, grads.getFloat32('noisy_latents'), 1e-30)).toBe(0);
  });
  it('compute_snr and min-SNR weights equal the golden values', () => {
    const v = open('lora_grads_variants.safetensors');
    expect(Array.from(snr(batch.timesteps))).toEqual(Array.from(v.getFloat32('minsnr.snr')));
    expect(Array.from(minSnrWeights(batch.timesteps, batch.config.min_snr_gamma))).toEqual(Array.from(v.getFloat32('minsnr.weights')));
  });
  it('noise offset gives the golden noise and noisy latents', () => {
    const v = open('lora_grads_variants.safetensors');
    const noise = offsetNoise(eps, v.getFloat32('offset.offset_randn'), batch.config.noise_offset);
    expect(excess(noise, v.getFloat32('offset.noise'), 1e-30)).toBe(0);
    expect(excess(addNoise(x0, noise, batch.timesteps), v.getFloat32('offset.noisy_latents'), 1e-30)).toBe(0);
  });
});

describe('LoRA training step (UNet + text encoder LoRA) matches PEFT', () => {
  const { targets, params } = loraFromPeftFile(loraFile, model);
  let plain: TrainStepSession;
  let weighted: TrainStepSession;
  const base: StepBatch = {
    noisyLatents: addNoise(x0, eps, batch.timesteps),
    timesteps: batch.timesteps,
    inputIds: batch.input_ids,
    target: eps,
    latentSize: [h, w],
  };

  const fixed = { batch: batch.timesteps.length, height: h, width: w };
  beforeAll(async () => {
    plain = await TrainStepSession.create(buildLoraStep(model, targets, { modelPred: true, fixed }), { threads: 2 });
    // the min-SNR step also recomputes every UNet resnet/transformer in the backward pass
    weighted = await TrainStepSession.create(buildLoraStep(model, targets, { lossWeights: true, fixed, checkpoint: 'modules' }), { threads: 2 });
  }, 180_000);
  afterAll(async () => {
    await plain?.release();
    await weighted?.release();
  });

  it('trains every tensor of the LoRA file', () => {
    expect(targets.length * 2).toBe(loraKeys.length);
    expect(new Set(plain.step.params.map((p) => p.name))).toEqual(new Set(loraKeys));
  });

  it('lora_grads: loss, prediction and the gradient of every LoRA tensor', async () => {
    const r = await plain.run(base, params);
    expect(Math.abs(r.loss - batch.losses.lora_main!)).toBeLessThan(1e-5 * batch.losses.lora_main!);
    expect(excess(r.extra.get('model_pred')!, grads.getFloat32('model_pred'), 1e-4)).toBeLessThan(1);
    compareGrads(r.grads, grads, entry('lora_grads.safetensors'), '', loraKeys);
  });

  it('the checkpointed step really recomputes: more forward-op nodes than the plain one', () => {
    const count = (t: TrainStepSession, op: string): number => t.step.graph.nodes.filter((n) => n.opType === op).length;
    expect(count(weighted, 'MultiHeadAttention')).toBeGreaterThan(count(plain, 'MultiHeadAttention'));
    expect(count(weighted, 'Conv')).toBeGreaterThan(count(plain, 'Conv'));
  });

  it('lora_grads_variants: min-SNR-gamma weighted loss (with gradient checkpointing)', async () => {
    const v = open('lora_grads_variants.safetensors');
    const r = await weighted.run({ ...base, lossWeights: minSnrWeights(batch.timesteps, batch.config.min_snr_gamma) }, params);
    expect(Math.abs(r.loss - batch.losses.lora_minsnr!)).toBeLessThan(1e-5 * batch.losses.lora_minsnr!);
    compareGrads(r.grads, v, entry('lora_grads_variants.safetensors'), 'minsnr.grad.', loraKeys);
  });

  it('lora_grads_variants: noise offset', async () => {
    const v = open('lora_grads_variants.safetensors');
    const noise = offsetNoise(eps, v.getFloat32('offset.offset_randn'), batch.config.noise_offset);
    const r = await plain.run({ ...base, noisyLatents: addNoise(x0, noise, batch.timesteps), target: noise }, params);
    expect(Math.abs(r.loss - batch.losses.lora_offset!)).toBeLessThan(1e-5 * batch.losses.lora_offset!);
    compareGrads(r.grads, v, entry('lora_grads_variants.safetensors'), 'offset.grad.', loraKeys);
  });

  it('adamw_step: gradients recomputed at the step-1 parameters (step2.grad, step2.loss)', async () => {
    const a = open('adamw_step.safetensors');
    const step1 = new Map(loraKeys.map((k) => [k, a.getFloat32(`step1.param.${k}`)]));
    const r = await plain.run(base, step1);
    expect(Math.abs(r.loss - batch.losses.adamw_step2_loss!)).toBeLessThan(1e-5 * batch.losses.adamw_step2_loss!);
    compareGrads(r.grads, a, entry('adamw_step.safetensors'), 'step2.grad.', loraKeys);
  });
});

describe('AdamW (torch.optim.AdamW) from the golden gradients', () => {
  it('step 1 and step 2: params, exp_avg, exp_avg_sq', () => {
    const a = open('adamw_step.safetensors');
    const e = entry('adamw_step.safetensors');
    const cfg = batch.config.adamw;
    const lora = SafetensorsFile.open(loraFile);
    const params = new Map(loraKeys.map((k) => [k, lora.getFloat32(k)]));
    const opt = new AdamW(params, { lr: cfg.lr, betas: cfg.betas, eps: cfg.eps, weightDecay: cfg.weight_decay });
    const check = (step: string): void => {
      const bad: string[] = [];
      for (const k of loraKeys) {
        const s = opt.stateDict();
        const pairs: [string, Float32Array, number][] = [
          ['param', params.get(k)!, 2e-7],
          ['exp_avg', s.expAvg.get(k)!, 0],
          ['exp_avg_sq', s.expAvgSq.get(k)!, 0],
        ];
        for (const [what, mine, fixed] of pairs) {
          const name = `${step}.${what}.${k}`;
          const golden = a.getFloat32(name);
          let maxAbs = 0;
          for (const x of golden) maxAbs = Math.max(maxAbs, Math.abs(x));
          const atol = fixed || Math.max(1e-6 * maxAbs, 1e-30);
          const r = excess(mine, golden, atol);
          if (r > 1) bad.push(`${name}: ${r.toFixed(2)}x atol`);
        }
      }
      expect(bad).toEqual([]);
    };
    opt.step(new Map(loraKeys.map((k) => [k, grads.getFloat32(k)])));
    check('step1');
    expect(e.tensor_stats[`step2.grad.${loraKeys[0]}`]).toBeDefined();
    opt.step(new Map(loraKeys.map((k) => [k, a.getFloat32(`step2.grad.${k}`)])));
    check('step2');
    expect(opt.stepCount).toBe(2);
  });
});

describe('full fine-tuning gradients (no LoRA)', () => {
  const full = open('full_grads.safetensors');
  const e = entry('full_grads.safetensors');
  const keys = (prefix: string): string[] => Object.keys(e.tensors).filter((k) => k.startsWith(prefix));

  it('UNet: every parameter, noisy latents and encoder states', async () => {
    const step = buildUnetFullStep(model, { textEncoder: 'input', inputGrads: ['noisy_latents', 'encoder_hidden_states'], fixed: { batch: batch.timesteps.length, height: h, width: w } });
    const unetKeys = keys('unet.');
    expect(step.params.length).toBe(unetKeys.length);
    const session = await TrainStepSession.create(step, { threads: 2 });
    try {
      const params = new Map(step.params.map((p) => [p.name, model.components.unet.get(p.name.slice('unet.'.length)).toFloat32()]));
      const r = await session.run({
        noisyLatents: full.getFloat32('noisy_latents'),
        timesteps: batch.timesteps,
        encoderStates: full.getFloat32('unetloss.encoder_hidden_states'),
        target: full.getFloat32('eps'),
        latentSize: [h, w],
      }, params);
      expect(Math.abs(r.loss - batch.losses.unet_full!)).toBeLessThan(1e-5 * batch.losses.unet_full!);
      compareGrads(r.grads, full, e, '', unetKeys);
      const inputs = new Map([['unetloss.grad_noisy_latents', r.grads.get('noisy_latents')!], ['unetloss.grad_encoder_hidden_states', r.grads.get('encoder_hidden_states')!]]);
      for (const [name, mine] of inputs) {
        const atol = 1e-4 * e.group_max_abs[name]! + 1e-6 * e.group_max_abs[name]!;
        expect(excess(mine, full.getFloat32(name), atol), name).toBeLessThan(1);
      }
    } finally {
      await session.release();
    }
  }, 180_000);

  it('VAE decoder: every post_quant_conv/decoder parameter and z', async () => {
    const step = buildVaeDecoderStep(model, { decoded: true });
    const vaeKeys = keys('vae.');
    expect(step.params.length).toBe(vaeKeys.length);
    const session = await TrainStepSession.create(step, { threads: 2 });
    try {
      const params = new Map(step.params.map((p) => [p.name, model.components.vae.get(p.name.slice('vae.'.length)).toFloat32()]));
      const z = full.getFloat32('vaeloss.z');
      const zShape = full.info('vaeloss.z').shape;
      const r = await session.run({ z, targetImage: full.getFloat32('vaeloss.target_img'), latentSize: [zShape[2]!, zShape[3]!] }, params);
      expect(Math.abs(r.loss - batch.losses.vae_decoder!)).toBeLessThan(1e-5 * batch.losses.vae_decoder!);
      compareGrads(r.grads, full, e, '', vaeKeys);
      const atol = 1.01e-4 * e.group_max_abs['vaeloss.grad_z']!;
      expect(excess(r.grads.get('z')!, full.getFloat32('vaeloss.grad_z'), atol)).toBeLessThan(1);
    } finally {
      await session.release();
    }
  }, 180_000);
});

describe('AdamW as graph ops (appendAdamW) from the golden gradients', () => {
  it('step 1: params, exp_avg, exp_avg_sq', async () => {
    const a = open('adamw_step.safetensors');
    const cfg = batch.config.adamw;
    const lora = SafetensorsFile.open(loraFile);
    const g = new Graph('adamw');
    const pairs = loraKeys.map((k) => {
      const shape = lora.info(k).shape;
      return { param: g.input(k, 'f32', shape), grad: g.input(`grad.${k}`, 'f32', shape) };
    });
    const upd = appendAdamW(g, pairs, { betas: cfg.betas, eps: cfg.eps });
    const session = await ort.InferenceSession.create(exportOnnx(g));
    const feeds: Record<string, ort.Tensor> = {};
    for (const [name, value] of Object.entries(adamwScalars(1, cfg.lr, cfg.weight_decay, cfg.betas))) feeds[name] = new ort.Tensor('float32', Float32Array.of(value), []);
    for (const k of loraKeys) {
      const shape = lora.info(k).shape;
      const n = shape.reduce((x, y) => x * y, 1);
      feeds[k] = new ort.Tensor('float32', lora.getFloat32(k), shape);
      feeds[`grad.${k}`] = new ort.Tensor('float32', grads.getFloat32(k), shape);
      feeds[upd.tensors.get(k)!.expAvgIn] = new ort.Tensor('float32', new Float32Array(n), shape);
      feeds[upd.tensors.get(k)!.expAvgSqIn] = new ort.Tensor('float32', new Float32Array(n), shape);
    }
    const out = await session.run(feeds);
    await session.release();
    const bad: string[] = [];
    for (const k of loraKeys) {
      const t = upd.tensors.get(k)!;
      const pairs2: [string, string, boolean][] = [['param', t.paramOut, true], ['exp_avg', t.expAvgOut, false], ['exp_avg_sq', t.expAvgSqOut, false]];
      for (const [what, outName, isParam] of pairs2) {
        const golden = a.getFloat32(`step1.${what}.${k}`);
        let maxAbs = 0;
        for (const x of golden) maxAbs = Math.max(maxAbs, Math.abs(x));
        const r = excess(out[outName]!.data as Float32Array, golden, isParam ? 2e-7 : Math.max(1e-6 * maxAbs, 1e-30));
        if (r > 1) bad.push(`step1.${what}.${k}: ${r.toFixed(2)}x atol`);
      }
    }
    expect(bad).toEqual([]);
  }, 60_000);
});
