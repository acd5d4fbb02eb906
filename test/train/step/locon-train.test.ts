// A short LoCon training run (network_target "attention+ff+conv") on the golden tiny model:
// the loss falls, the kohya file holds LoCon conv factors (lora_down [r, in, 3, 3], lora_up
// [out, r, 1, 1], alpha) that the adapter loader reads as the runtime 'conv' form for exactly
// the 3x3 convs trained, and the UNet with the loaded adapter fused in predicts what the
// training graph predicted with the trained factors.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildModuleIndex, describeMatch, fuseAdapters, fusedSources, loadAdapter, runtimeModules } from '../../../src/adapters/index.ts';
import { openCheckpoint } from '../../../src/models/checkpoint/index.ts';
import { buildUnet } from '../../../src/models/unet.ts';
import { compileGraph } from '../../../src/runtime/compile.ts';
import { SafetensorsFile } from '../../../src/tensor/safetensors.ts';
import { Tensor } from '../../../src/tensor/tensor.ts';
import { loadTrainConfig } from '../../../src/train/data/config.ts';
import { writeSceneDataset } from '../../../src/train/procedural/dataset.ts';
import { StepSessionCache, train, type TrainResult } from '../../../src/train/run/trainer.ts';
import { buildLoraStep, type LoraTarget, loraTargets, TrainStepSession } from '../../../src/train/step/index.ts';
import { goldenPath } from '../../helpers/golden.ts';

const STEPS = 80;
const RANK = 4;
const ALPHA = 2;
const root = mkdtempSync(join(tmpdir(), 'redline-locon-'));
const sessions = new StepSessionCache();
let run: TrainResult;

const CONV3X3 = /\.(resnets\.\d+\.conv[12]|(down|up)samplers\.\d+\.conv)$/;

beforeAll(async () => {
  await writeSceneDataset(join(root, 'scenes'), { count: 8, seed: 3, size: 64, splatter: 'graded' });
  writeFileSync(join(root, 'train.toml'), `
[training]
pretrained_model_name_or_path = "${goldenPath('models', 'diffusers')}"
output_dir = "out"
output_name = "locon"
network_dim = ${RANK}
network_alpha = ${ALPHA}
network_target = "attention+ff+conv"
network_train_unet_only = true
learning_rate = 2e-3
lr_scheduler = "constant"
max_train_steps = ${STEPS}
seed = 5

[general]
resolution = 64
batch_size = 2

[[datasets]]
  [[datasets.subsets]]
  image_dir = "scenes"
`);
  run = await train(loadTrainConfig(join(root, 'train.toml')), { stepSessions: sessions });
}, 120_000);

afterAll(async () => {
  await sessions.release();
  rmSync(root, { recursive: true, force: true });
});

describe('LoCon training run (golden tiny model, CPU)', () => {
  it('the loss falls', () => {
    expect(run.steps).toBe(STEPS);
    const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
    const first = mean(run.losses.slice(0, 20));
    const last = mean(run.losses.slice(-20));
    console.log(`loss first ${first} last ${last}`);
    expect(last).toBeLessThan(first * 0.95);
  });

  it('writes kohya LoCon conv keys that the loader reads as the conv form of the trained modules', () => {
    const ck = openCheckpoint(goldenPath('models', 'diffusers'));
    const f = SafetensorsFile.open(run.output);
    try {
      expect(JSON.parse(f.metadata.ss_network_args!)).toMatchObject({ conv_dim: String(RANK), conv_alpha: String(ALPHA) });
      const unet = ck.components.unet;
      const convModules = unet.names().filter((n) => n.endsWith('.weight') && CONV3X3.test(n.slice(0, -'.weight'.length))).map((n) => n.slice(0, -'.weight'.length));
      expect(convModules.length).toBeGreaterThan(10);
      for (const m of convModules) {
        const k = `lora_unet_${m.replace(/\./g, '_')}`;
        const [out, inC, kh, kw] = unet.shape(`${m}.weight`) as [number, number, number, number];
        expect(f.info(`${k}.lora_down.weight`).shape).toEqual([RANK, inC, kh, kw]);
        expect(f.info(`${k}.lora_up.weight`).shape).toEqual([out, RANK, 1, 1]);
        expect(Array.from(f.getFloat32(`${k}.alpha`))).toEqual([ALPHA]);
        // trained: the zero-initialised up factor moved
        expect(f.getFloat32(`${k}.lora_up.weight`).some((v) => v !== 0)).toBe(true);
      }
      const adapter = loadAdapter(run.output, buildModuleIndex(ck));
      const keys = f.keys().length;
      expect(describeMatch(adapter)).toBe(`locon: applied ${keys} of ${keys} keys to ${keys / 3} modules`);
      const conv = runtimeModules(adapter).filter((m) => m.form === 'conv');
      expect(conv.map((m) => m.module).sort()).toEqual([...convModules].sort());
      for (const m of conv) {
        expect(m.component).toBe('unet');
        expect(m.targetShape).toEqual(unet.shape(`${m.module}.weight`));
        expect(m.scale).toBeCloseTo(ALPHA / RANK, 12);
        expect(m.downShape).toEqual([RANK, ...unet.shape(`${m.module}.weight`).slice(1)]);
        const k = `lora_unet_${m.module.replace(/\./g, '_')}`;
        expect(Array.from(m.down!)).toEqual(Array.from(f.getFloat32(`${k}.lora_down.weight`)));
        expect(Array.from(m.up!)).toEqual(Array.from(f.getFloat32(`${k}.lora_up.weight`)));
      }
      expect(adapter.modules.filter((m) => CONV3X3.test(`.${m.target.module}`)).every((m) => m.kind === 'locon')).toBe(true);
    } finally {
      f.close();
      ck.close();
    }
  });

  it('the UNet with the loaded file fused predicts what the training graph predicted', async () => {
    const ck = openCheckpoint(goldenPath('models', 'diffusers'));
    const f = SafetensorsFile.open(run.output);
    const [B, H, W] = [1, 8, 8];
    const noisy = Float32Array.from({ length: B * 4 * H * W }, (_, i) => Math.sin(i * 0.37));
    const states = Float32Array.from({ length: B * 77 * 32 }, (_, i) => Math.cos(i * 0.11));
    try {
      // the trained factors back as PEFT params for the training graph
      const targets: LoraTarget[] = loraTargets(ck, { unet: 'transformer+conv', textEncoder: false, rank: RANK, alpha: ALPHA });
      const params = new Map<string, Float32Array>();
      for (const t of targets) {
        const k = `lora_unet_${t.key.slice('unet.'.length).replace(/\./g, '_')}`;
        params.set(`${t.key}.lora_A.weight`, f.getFloat32(`${k}.lora_down.weight`));
        params.set(`${t.key}.lora_B.weight`, f.getFloat32(`${k}.lora_up.weight`));
      }
      const step = await TrainStepSession.create(buildLoraStep(ck, targets, { textEncoder: 'input', modelPred: true, fixed: { batch: B, height: H, width: W } }), { threads: 1 });
      let trained: Float32Array;
      try {
        const r = await step.run({ noisyLatents: noisy, timesteps: [300], encoderStates: states, target: new Float32Array(noisy.length), latentSize: [H, W] }, params);
        trained = r.extra.get('model_pred')!;
      } finally {
        await step.release();
      }
      const adapter = loadAdapter(run.output, buildModuleIndex(ck));
      const fused = fusedSources(ck.components, fuseAdapters(ck.components, [{ adapter, te: 0, unet: 1 }]));
      const session = await compileGraph(buildUnet(ck.configs.unet, fused.unet));
      const plain = await compileGraph(buildUnet(ck.configs.unet, ck.components.unet));
      const feeds = { sample: new Tensor('f32', [B, 4, H, W], noisy), timestep: new Tensor('f32', [B], Float32Array.of(300)), encoder_hidden_states: new Tensor('f32', [B, 77, 32], states) };
      const loaded = (await session.run(feeds, ['out_sample'])).out_sample!.toFloat32();
      const base = (await plain.run(feeds, ['out_sample'])).out_sample!.toFloat32();
      await session.release();
      await plain.release();
      let diff = 0;
      let effect = 0;
      for (let i = 0; i < trained.length; i++) {
        diff = Math.max(diff, Math.abs(loaded[i]! - trained[i]!));
        effect = Math.max(effect, Math.abs(base[i]! - trained[i]!));
      }
      // the adapter changes the prediction, and the loaded adapter changes it the same way
      expect(effect).toBeGreaterThan(1e-3);
      expect(diff).toBeLessThan(effect * 1e-3);
    } finally {
      f.close();
      ck.close();
    }
  }, 60_000);
});
