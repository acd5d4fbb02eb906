// The step graph and AdamW together: training a fresh rank-2 LoRA on one fixed batch of
// the tiny SD-shaped model lowers the loss, and the same seed gives the same trajectory.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openCheckpoint } from '../../../src/models/checkpoint/load.ts';
import { AdamW } from '../../../src/train/optim/adamw.ts';
import { buildLoraStep } from '../../../src/train/step/graphs.ts';
import { initLoraParams, loraTargets } from '../../../src/train/step/lora.ts';
import { addNoise } from '../../../src/train/step/noise.ts';
import { TrainStepSession, type StepBatch } from '../../../src/train/step/session.ts';
import { SafetensorsFile } from '../../../src/tensor/safetensors.ts';
import { goldenJson, goldenPath } from '../../helpers/golden.ts';

const batch = goldenJson<{ input_ids: number[][]; timesteps: number[]; config: { latent_hw: [number, number] } }>('training', 'batch.json');
const data = SafetensorsFile.open(goldenPath('training', 'lora_grads.safetensors'));

describe('LoRA training on one batch', () => {
  const model = openCheckpoint(goldenPath('models', 'diffusers'));
  const targets = loraTargets(model, { unet: 'transformer', textEncoder: true, rank: 2, alpha: 2 });
  const [h, w] = batch.config.latent_hw;
  const eps = data.getFloat32('eps');
  const input: StepBatch = {
    noisyLatents: addNoise(data.getFloat32('x0'), eps, batch.timesteps),
    timesteps: batch.timesteps,
    inputIds: batch.input_ids,
    target: eps,
    latentSize: [h, w],
  };
  let session: TrainStepSession;
  beforeAll(async () => {
    session = await TrainStepSession.create(buildLoraStep(model, targets, { fixed: { batch: batch.timesteps.length, height: h, width: w } }), { threads: 2 });
  }, 180_000);
  afterAll(() => session?.release());

  const train = async (steps: number): Promise<number[]> => {
    const params = initLoraParams(targets, 3);
    const opt = new AdamW(params, { lr: 3e-3, weightDecay: 0 });
    const losses: number[] = [];
    for (let i = 0; i < steps; i++) {
      const r = await session.run(input, params);
      losses.push(r.loss);
      opt.step(r.grads);
    }
    return losses;
  };

  it('lowers the loss and is reproducible', async () => {
    const a = await train(12);
    expect(a[a.length - 1]!).toBeLessThan(0.97 * a[0]!);
    const b = await train(3);
    expect(b).toEqual(a.slice(0, 3));
  }, 120_000);
});
