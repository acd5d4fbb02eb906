// LoCon (kohya conv LoRA) targets in the training step: 3x3 resnet and sampler convs are
// selected with down [rank, in, kh, kw] / up [out, rank, 1, 1] factors, and the step graph's
// gradient of a conv factor matches central finite differences of the same graph's loss.
import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../../../src/models/checkpoint/load.ts';
import { buildLoraStep } from '../../../src/train/step/graphs.ts';
import { initLoraParams, loraTargets } from '../../../src/train/step/lora.ts';
import { TrainStepSession } from '../../../src/train/step/session.ts';
import { goldenPath } from '../../helpers/golden.ts';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe('LoCon conv targets', () => {
  const model = openCheckpoint(goldenPath('models', 'diffusers'));
  const unetNames = model.components.unet.names();

  it('transformer+conv adds every resnet conv1/conv2 and sampler conv (3x3) to the transformer set', () => {
    const base = loraTargets(model, { unet: 'transformer', textEncoder: false, rank: 4, alpha: 2 });
    const withConv = loraTargets(model, { unet: 'transformer+conv', textEncoder: false, rank: 4, alpha: 2 });
    const baseKeys = new Set(base.map((t) => t.key));
    expect(base.every((t) => t.shape.length === 2 || (t.shape[2] === 1 && t.shape[3] === 1))).toBe(true);
    const extra = withConv.filter((t) => !baseKeys.has(t.key));
    expect(withConv.length).toBe(base.length + extra.length);
    const expected = unetNames
      .filter((n) => /\.(resnets\.\d+\.conv[12]|(down|up)samplers\.\d+\.conv)\.weight$/.test(n))
      .map((n) => `unet.${n.slice(0, -'.weight'.length)}`)
      .sort();
    expect(expected.length).toBeGreaterThan(10);
    expect(extra.map((t) => t.key).sort()).toEqual(expected);
    for (const t of extra) {
      expect(t.shape).toEqual(model.components.unet.shape(t.weight));
      expect(t.shape.slice(2)).toEqual([3, 3]);
    }
    // the UNet's stem and head convs are not in kohya's LoCon module set
    expect(withConv.some((t) => /^unet\.conv_(in|out)$/.test(t.key))).toBe(false);
    const params = initLoraParams(extra, 3);
    const t = extra[0]!;
    const fanIn = t.shape[1]! * 9;
    const a = params.get(`${t.key}.lora_A.weight`)!;
    expect(a.length).toBe(4 * fanIn);
    expect(Math.max(...a.map(Math.abs))).toBeLessThanOrEqual(1 / Math.sqrt(fanIn));
    expect(params.get(`${t.key}.lora_B.weight`)!.every((v) => v === 0)).toBe(true);
  });

  it('the gradient of a 3x3 conv factor (down and up) matches central finite differences of the loss', async () => {
    const all = loraTargets(model, { unet: 'transformer+conv', textEncoder: false, rank: 2, alpha: 1 });
    // a strided downsampler and a resnet conv: stride and padding must follow the target
    const targets = all.filter((t) => /^unet\.down_blocks\.0\.downsamplers\.0\.conv$|up_blocks\.1\.resnets\.0\.conv1$/.test(t.key));
    expect(targets).toHaveLength(2);
    const [B, H, W] = [1, 8, 8];
    const step = await TrainStepSession.create(
      buildLoraStep(model, targets, { textEncoder: 'input', fixed: { batch: B, height: H, width: W } }),
      { threads: 1 },
    );
    try {
      const r = rng(5);
      const params = initLoraParams(targets, 9);
      // B = 0 makes the down factor's gradient vanish: start from a random up factor
      for (const t of targets) params.get(`${t.key}.lora_B.weight`)!.forEach((_, i, arr) => { arr[i] = (r() * 2 - 1) * 0.5; });
      const batch = {
        noisyLatents: Float32Array.from({ length: B * 4 * H * W }, () => r() * 2 - 1),
        timesteps: [500],
        encoderStates: Float32Array.from({ length: B * 77 * 32 }, () => r() * 2 - 1),
        target: Float32Array.from({ length: B * 4 * H * W }, () => r() * 2 - 1),
        latentSize: [H, W] as const,
      };
      const { grads } = await step.run(batch, params);
      const h = 2e-2;
      for (const t of targets) {
        for (const part of ['lora_A', 'lora_B']) {
          const name = `${t.key}.${part}.weight`;
          const p = params.get(name)!;
          const g = grads.get(name)!;
          expect(g.length).toBe(p.length);
          let scale = 0;
          for (const v of g) scale = Math.max(scale, Math.abs(v));
          expect(scale).toBeGreaterThan(0);
          // the largest-gradient element and two random ones
          let jMax = 0;
          g.forEach((v, j) => { if (Math.abs(v) > Math.abs(g[jMax]!)) jMax = j; });
          for (const j of [jMax, Math.floor(r() * p.length), Math.floor(r() * p.length)]) {
            const x0 = p[j]!;
            p[j] = x0 + h;
            const lp = (await step.run(batch, params)).loss;
            p[j] = x0 - h;
            const lm = (await step.run(batch, params)).loss;
            p[j] = x0;
            const fd = (lp - lm) / (2 * h);
            expect(Math.abs(fd - g[j]!) / scale, `${name}[${j}]: fd ${fd} vs ${g[j]}`).toBeLessThan(2e-2);
          }
        }
      }
    } finally {
      await step.release();
    }
  }, 60_000);
});
