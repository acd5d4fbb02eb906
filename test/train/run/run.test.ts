import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { parseSidecar } from '../../../src/adapters/registry.ts';
import { computeFileHashes } from '../../../src/models/checkpoint/hash.ts';
import { SafetensorsFile } from '../../../src/tensor/safetensors.ts';
import { TrainRng } from '../../../src/train/data/rng.ts';
import { levelStrengths, strengthFor, writeSidecar } from '../../../src/train/run/calibrate.ts';
import { loadCheckpoint, saveCheckpoint } from '../../../src/train/run/checkpoint.ts';
import { kohyaModuleName, kohyaTensors, saveKohyaLora } from '../../../src/train/run/kohya.ts';
import { LossLog, lossCurveSvg, movingAverage, readLossLog, writeLossCurve } from '../../../src/train/run/losslog.ts';
import type { LoraTarget } from '../../../src/train/step/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'redline-run-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('kohya output', () => {
  it('names modules as kohya does', () => {
    expect(kohyaModuleName('unet.down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_out.0')).toBe('lora_unet_down_blocks_0_attentions_1_transformer_blocks_0_attn2_to_out_0');
    expect(kohyaModuleName('text_encoder.text_model.encoder.layers.11.self_attn.q_proj')).toBe('lora_te_text_model_encoder_layers_11_self_attn_q_proj');
  });

  it('writes lora_down/lora_up/alpha with ss_* metadata and the addnet hash kohya precomputes', async () => {
    const targets: LoraTarget[] = [
      { key: 'unet.mid_block.attentions.0.proj_in', component: 'unet', weight: 'mid_block.attentions.0.proj_in.weight', shape: [8, 8, 1, 1], rank: 2, alpha: 1 },
      { key: 'text_encoder.text_model.encoder.layers.0.mlp.fc1', component: 'text_encoder', weight: 'text_model.encoder.layers.0.mlp.fc1.weight', shape: [6, 4], rank: 2, alpha: 2 },
    ];
    const params = new Map<string, Float32Array>([
      ['unet.mid_block.attentions.0.proj_in.lora_A.weight', Float32Array.from({ length: 16 }, (_, i) => i)],
      ['unet.mid_block.attentions.0.proj_in.lora_B.weight', Float32Array.from({ length: 16 }, (_, i) => -i)],
      ['text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_A.weight', new Float32Array(8).fill(0.5)],
      ['text_encoder.text_model.encoder.layers.0.mlp.fc1.lora_B.weight', new Float32Array(12).fill(0.25)],
    ]);
    const path = join(dir, 'out.safetensors');
    const { modelHash } = await saveKohyaLora(path, kohyaTensors(targets, params), { ss_network_dim: '2', ss_network_alpha: '1' });
    const f = SafetensorsFile.open(path);
    try {
      expect(f.keys().sort()).toEqual([
        'lora_te_text_model_encoder_layers_0_mlp_fc1.alpha', 'lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight', 'lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight',
        'lora_unet_mid_block_attentions_0_proj_in.alpha', 'lora_unet_mid_block_attentions_0_proj_in.lora_down.weight', 'lora_unet_mid_block_attentions_0_proj_in.lora_up.weight',
      ]);
      expect(f.info('lora_unet_mid_block_attentions_0_proj_in.lora_down.weight').shape).toEqual([2, 8, 1, 1]);
      expect(f.info('lora_unet_mid_block_attentions_0_proj_in.lora_up.weight').shape).toEqual([8, 2, 1, 1]);
      expect(f.info('lora_unet_mid_block_attentions_0_proj_in.alpha').shape).toEqual([]);
      expect([...f.getFloat32('lora_unet_mid_block_attentions_0_proj_in.alpha')]).toEqual([1]);
      expect([...f.getFloat32('lora_unet_mid_block_attentions_0_proj_in.lora_up.weight')].slice(0, 3)).toEqual([-0, -1, -2]);
      expect(f.metadata.ss_network_dim).toBe('2');
      expect(f.metadata.sshs_model_hash).toBe(modelHash);
    } finally {
      f.close();
    }
    // sshs_model_hash is the addnet hash (sha256 of the tensor bytes), which the metadata does not change
    expect((await computeFileHashes(path)).addnet).toBe(modelHash);
  });
});

describe('run checkpoints', () => {
  it('round-trips params, optimizer moments and RNG state exactly', () => {
    const rng = new TrainRng(5);
    rng.normal();
    const params = new Map([['unet.x.lora_A.weight', Float32Array.of(1.5, -2, 3e-8)]]);
    const opt = { unet: { step: 7, expAvg: new Map([['unet.x.lora_A.weight', Float32Array.of(0.1, 0.2, 0.3)]]), expAvgSq: new Map([['unet.x.lora_A.weight', Float32Array.of(1e-9, 2e-9, 3e-9)]]) } };
    const ck = join(dir, 'ck', 'step-000007');
    const state = { version: 1, position: { step: 7, epoch: 1, batchIndex: 3, epochOrderState: rng.state() }, rng: { order: rng.state(), caption: rng.state(), noise: rng.state(), timestep: rng.state() }, optimizerSteps: { unet: 7 }, settingsDigest: 'abc', trainingStartedAt: 1, elapsedSeconds: 2 };
    saveCheckpoint(ck, state, params, opt);
    const back = loadCheckpoint(ck);
    expect(back.state).toEqual(state);
    expect(back.params).toEqual(params);
    expect(back.optimizers.unet).toEqual(opt.unet);
    expect(TrainRng.fromState(back.state.rng.noise).normal()).toBe(rng.normal());
  });

  it('refuses a folder that is not a checkpoint', () => {
    expect(() => loadCheckpoint(dir)).toThrow(/not a Redline training checkpoint/);
  });
});

describe('loss log', () => {
  it('keeps rows up to the resumed step and draws a PNG', async () => {
    const csv = join(dir, 'loss.csv');
    const log = new LossLog(csv);
    for (let s = 1; s <= 5; s++) log.append({ step: s, loss: 1 / s, lr: 1e-4, epoch: 0, elapsed: s });
    new LossLog(csv, 3).append({ step: 4, loss: 0.3, lr: 1e-4, epoch: 0, elapsed: 4 });
    expect(readLossLog(csv).map((r) => [r.step, r.loss])).toEqual([[1, 1], [2, 0.5], [3, 1 / 3], [4, 0.3]]);
    expect(readFileSync(csv, 'utf8').split('\n')[0]).toBe('step,loss,lr,epoch,elapsed_s');
    expect(movingAverage([1, 2, 3, 4], 2)).toEqual([1, 1.5, 2.5, 3.5]);
    expect(lossCurveSvg(readLossLog(csv), 'a <b>')).toContain('a &lt;b&gt;');
    const png = join(dir, 'loss.png');
    await writeLossCurve(png, readLossLog(csv), 'loss');
    expect(await sharp(png).metadata()).toMatchObject({ format: 'png', width: 800, height: 400 });
  });
});

describe('intensity calibration', () => {
  const curve = [{ strength: 0, effect: 0.01 }, { strength: 0.5, effect: 0.05 }, { strength: 1, effect: 0.04 }, { strength: 1.5, effect: 0.2 }];

  it('interpolates on the running maximum of the effect curve', () => {
    expect(strengthFor(curve, 0.005)).toEqual({ strength: 0, reached: true });
    // 0.03 lies between 0.01 (s 0) and 0.05 (s 0.5): s = 0.5 * 0.02/0.04 = 0.25
    expect(strengthFor(curve, 0.03).strength).toBeCloseTo(0.25, 12);
    // the dip at s 1 is flattened to 0.05, so 0.1 lies between s 1 (0.05) and 1.5 (0.2): 1 + 0.5/3
    expect(strengthFor(curve, 0.1).strength).toBeCloseTo(1 + 0.5 / 3, 12);
    expect(strengthFor(curve, 0.5)).toEqual({ strength: 1.5, reached: false });
  });

  it('maps levels and writes a sidecar the registry accepts', () => {
    const { levels, unreached } = levelStrengths(curve, { 0: 0, 1: 0.03, 2: 0.1, 3: 0.5 });
    expect(levels).toEqual({ 0: 0, 1: 0.25, 2: 1.167, 3: 1.5 });
    expect(unreached).toEqual(['3']);
    // a level whose images show less effect than a lower level's keeps the lower strength
    expect(levelStrengths(curve, { 1: 0.1, 2: 0.03, 3: 0.2 }).levels).toEqual({ 1: 1.167, 2: 1.167, 3: 1.5 });
    const path = join(dir, 'a.json');
    writeSidecar(path, { category: 'graphic-injury', intensity: levels, notes: 'x' });
    expect(parseSidecar(JSON.parse(readFileSync(path, 'utf8')))).toEqual({ sidecar: { category: 'graphic-injury', intensity: levels, notes: 'x' }, problems: [], warnings: [] });
    expect(() => writeSidecar(path, { category: 'Not Valid' })).toThrow(/invalid/);
  });
});
