// Unit behaviour of the training-step pieces: LR schedules (diffusers get_scheduler
// formulas, values worked out by hand), AdamW on a hand-computed first step, LoRA target
// selection and init, input validation.
import { describe, expect, it } from 'vitest';
import { openCheckpoint } from '../../../src/models/checkpoint/load.ts';
import { AdamW } from '../../../src/train/optim/adamw.ts';
import { lrAt } from '../../../src/train/optim/schedule.ts';
import { buildLoraStep } from '../../../src/train/step/graphs.ts';
import { initLoraParams, loraTargets } from '../../../src/train/step/lora.ts';
import { addNoise, minSnrWeights } from '../../../src/train/step/noise.ts';
import { goldenPath } from '../../helpers/golden.ts';

describe('learning-rate schedules (diffusers get_scheduler)', () => {
  it('constant ignores warmup; constant_with_warmup ramps linearly', () => {
    expect(lrAt({ name: 'constant', lr: 2, warmupSteps: 10 }, 0)).toBe(2);
    expect(lrAt({ name: 'constant_with_warmup', lr: 1, warmupSteps: 4 }, 1)).toBe(0.25);
    expect(lrAt({ name: 'constant_with_warmup', lr: 1, warmupSteps: 4 }, 4)).toBe(1);
  });
  it('linear: warmup then decay to 0 at the last step', () => {
    const s = { name: 'linear' as const, lr: 1, warmupSteps: 10, totalSteps: 110 };
    expect(lrAt(s, 5)).toBe(0.5);
    expect(lrAt(s, 10)).toBe(1);
    expect(lrAt(s, 60)).toBe(0.5);
    expect(lrAt(s, 110)).toBe(0);
  });
  it('cosine and cosine_with_restarts', () => {
    expect(lrAt({ name: 'cosine', lr: 1, totalSteps: 100 }, 50)).toBeCloseTo(0.5, 12);
    expect(lrAt({ name: 'cosine', lr: 1, totalSteps: 100 }, 25)).toBeCloseTo(0.5 * (1 + Math.SQRT1_2), 12);
    const r = { name: 'cosine_with_restarts' as const, lr: 1, totalSteps: 100, cycles: 2 };
    expect(lrAt(r, 25)).toBeCloseTo(0.5, 12);
    expect(lrAt(r, 50)).toBe(1);
    expect(lrAt(r, 100)).toBe(0);
  });
  it('refuses unknown names and decaying schedules without a step count', () => {
    expect(() => lrAt({ name: 'polynomial' as 'linear', lr: 1 }, 0)).toThrow(/Unknown lr_scheduler/);
    expect(() => lrAt({ name: 'cosine', lr: 1 }, 0)).toThrow(/max_train_steps/);
  });
});

describe('AdamW', () => {
  it('first step: p(1 - lr wd) - lr g / (|g| + eps) for each element, moments (1-b) g and (1-b2) g^2', () => {
    const p = new Map([['w', Float32Array.from([1, -2, 0.5])]]);
    const opt = new AdamW(p, { lr: 0.1, weightDecay: 0.5 });
    opt.step(new Map([['w', Float32Array.from([0.2, -0.4, 0])]]));
    const expectP = [1 * 0.95 - 0.1 * (0.2 / (0.2 + 1e-8)), -2 * 0.95 + 0.1 * (0.4 / (0.4 + 1e-8)), 0.5 * 0.95];
    p.get('w')!.forEach((v, i) => expect(v).toBeCloseTo(expectP[i]!, 6));
    opt.stateDict().expAvg.get('w')!.forEach((v, i) => expect(v).toBeCloseTo(0.1 * [0.2, -0.4, 0][i]!, 8));
    opt.stateDict().expAvgSq.get('w')!.forEach((v, i) => expect(v).toBeCloseTo(0.001 * [0.04, 0.16, 0][i]!, 9));
  });
  it('names a missing or mis-sized gradient', () => {
    const opt = new AdamW(new Map([['w', new Float32Array(3)]]), { lr: 1 });
    expect(() => opt.step(new Map())).toThrow(/No gradient for w/);
    expect(() => opt.step(new Map([['w', new Float32Array(2)]]))).toThrow(/2 values/);
  });
});

describe('LoRA targets and init', () => {
  const model = openCheckpoint(goldenPath('models', 'diffusers'));
  it('attention targets are the to_q/k/v/out.0 of every transformer block; transformer adds proj_in/out and ff', () => {
    const att = loraTargets(model, { unet: 'attention', textEncoder: false, rank: 4, alpha: 4 });
    const blocks = model.components.unet.names().filter((n) => n.endsWith('attn1.to_q.weight')).length;
    expect(att.length).toBe(blocks * 8);
    expect(att.every((t) => /attn[12]\.(to_q|to_k|to_v|to_out\.0)$/.test(t.key))).toBe(true);
    const all = loraTargets(model, { unet: 'transformer', textEncoder: true, rank: 4, alpha: 4 });
    expect(all.some((t) => t.key.endsWith('proj_in') && t.shape.length === 4)).toBe(true);
    expect(all.filter((t) => t.component === 'text_encoder').length).toBe(model.configs.text_encoder.num_hidden_layers * 6);
  });
  it('init is seeded, A within ±1/sqrt(fan_in), B zero', () => {
    const t = loraTargets(model, { unet: 'attention', textEncoder: false, rank: 2, alpha: 1 });
    const a = initLoraParams(t, 7);
    const b = initLoraParams(t, 7);
    const k = `${t[0]!.key}.lora_A.weight`;
    expect(Array.from(a.get(k)!)).toEqual(Array.from(b.get(k)!));
    const bound = 1 / Math.sqrt(t[0]!.shape[1]!);
    expect(a.get(k)!.every((v) => Math.abs(v) <= bound)).toBe(true);
    expect(a.get(`${t[0]!.key}.lora_B.weight`)!.every((v) => v === 0)).toBe(true);
  });
  it('bad settings are refused with what to fix', () => {
    expect(() => loraTargets(model, { unet: 'attention', textEncoder: false, rank: 0, alpha: 1 })).toThrow(/rank/);
    expect(() => buildLoraStep(model, [])).toThrow(/No LoRA target/);
    const te = loraTargets(model, { unet: 'none', textEncoder: true, rank: 2, alpha: 2 });
    expect(() => buildLoraStep(model, te, { textEncoder: 'input' })).toThrow(/in-graph/);
  });
});

describe('noise inputs', () => {
  it('refuses timesteps outside the schedule and mismatched arrays', () => {
    expect(() => addNoise(new Float32Array(8), new Float32Array(8), [1000])).toThrow(/outside 0\.\.999/);
    expect(() => addNoise(new Float32Array(8), new Float32Array(4), [1])).toThrow(/differ in size/);
    expect(() => minSnrWeights([1], 0)).toThrow(/positive/);
  });
});
