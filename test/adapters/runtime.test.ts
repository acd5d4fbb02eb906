// The runtime-strength path (adapters as graph inputs) against the fused path (adapters
// baked into the weights) on the golden tiny model, and the session reuse it promises:
// strength changes and same-shape swaps build nothing, no adapter runs the base graph.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { AdapterStrength } from '../../src/adapters/fuse.ts';
import { StableDiffusionModel } from '../../src/pipeline/model.ts';
import { Session } from '../../src/runtime/session.ts';
import { SafetensorsFile, writeSafetensors } from '../../src/tensor/safetensors.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import { goldenJson, goldenPath } from '../helpers/golden.ts';
import { maxAbsDiff, randn, rng } from './helpers.ts';

const ATOL = 1e-4;
// Each case builds ORT sessions for several graphs; the shared test machine is slow at it.
const SLOW = 600_000;
const dir = mkdtempSync(join(tmpdir(), 'redline-runtime-lora-'));
const unetGolden = SafetensorsFile.open(goldenPath('components', 'unet.safetensors'));
const teCases = goldenJson<{ input_ids: number[][] }>('components', 'text_encoder.json');
const caseName = unetGolden.keys().find((k) => /^case\d+\.sample$/.test(k) && unetGolden.info(k).shape[0] === 2)!.slice(0, -'.sample'.length);

let model: StableDiffusionModel;
const files: Record<string, string> = {};

/** A kohya file with the golden LoRA's keys and shapes but other factors (same signature). */
function sameShapeLora(seed: number): string {
  const src = SafetensorsFile.open(goldenPath('lora', 'lora_kohya.safetensors'));
  const r = rng(seed);
  const out = new Map<string, Tensor>();
  for (const k of src.keys()) {
    const t = src.get(k);
    out.set(k, k.endsWith('.alpha') ? new Tensor('f32', [], Float32Array.of(2)) : randn([...t.shape], () => r() * 0.4));
  }
  src.close();
  const p = join(dir, `same-shape-${seed}.safetensors`);
  writeSafetensors(p, out);
  return p;
}

/** LoCon (3x3 conv LoRA) on two resnet convs plus LoHa on an attention projection: the
 * 'conv' and 'dense' runtime forms. */
function loconLohaFile(): string {
  const r = rng(77);
  const ckpt = SafetensorsFile.open(join(goldenPath('models', 'diffusers'), 'unet', 'diffusion_pytorch_model.safetensors'));
  const out = new Map<string, Tensor>();
  const rank = 2;
  for (const conv of ['down_blocks.0.resnets.0.conv1', 'up_blocks.1.resnets.0.conv2', 'down_blocks.0.downsamplers.0.conv']) {
    const [o, i, kh, kw] = ckpt.info(`${conv}.weight`).shape as [number, number, number, number];
    const name = `lora_unet_${conv.replace(/\./g, '_')}`;
    out.set(`${name}.lora_down.weight`, randn([rank, i, kh, kw], () => r() * 0.5));
    out.set(`${name}.lora_up.weight`, randn([o, rank, 1, 1], () => r() * 0.5));
    out.set(`${name}.alpha`, new Tensor('f32', [], Float32Array.of(1)));
  }
  const lin = 'down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q';
  const [o, i] = ckpt.info(`${lin}.weight`).shape as [number, number];
  const name = `lora_unet_${lin.replace(/\./g, '_')}`;
  out.set(`${name}.hada_w1_a`, randn([o, rank], r));
  out.set(`${name}.hada_w1_b`, randn([rank, i], r));
  out.set(`${name}.hada_w2_a`, randn([o, rank], r));
  out.set(`${name}.hada_w2_b`, randn([rank, i], r));
  out.set(`${name}.alpha`, new Tensor('f32', [], Float32Array.of(2)));
  ckpt.close();
  const p = join(dir, 'locon-loha.safetensors');
  writeSafetensors(p, out);
  return p;
}

beforeAll(async () => {
  model = await StableDiffusionModel.load(goldenPath('models', 'diffusers'));
  files.kohya = goldenPath('lora', 'lora_kohya.safetensors');
  files.peft = goldenPath('lora', 'lora_peft.safetensors');
  files.other = sameShapeLora(5);
  files.third = sameShapeLora(9);
  files.lycoris = loconLohaFile();
}, SLOW);

afterAll(async () => {
  await model.release();
  unetGolden.close();
  rmSync(dir, { recursive: true, force: true });
});

async function outputs(): Promise<{ unet: Float32Array; te: Float32Array; skip2: Float32Array }> {
  const u = await model.unet.run({
    sample: unetGolden.get(`${caseName}.sample`),
    timestep: unetGolden.get(`${caseName}.timestep`),
    encoder_hidden_states: unetGolden.get(`${caseName}.encoder_hidden_states`),
  }, ['out_sample']);
  const ids = teCases.input_ids;
  const t = await model.textEncoder.run({ input_ids: new Tensor('i64', [ids.length, ids[0]!.length], BigInt64Array.from(ids.flat(), BigInt)) }, ['last_hidden_state', 'clip_skip_2']);
  return { unet: u.out_sample!.toFloat32(), te: t.last_hidden_state!.toFloat32(), skip2: t.clip_skip_2!.toFloat32() };
}

function spec(list: Array<[string, number, number]>): AdapterStrength[] {
  return list.map(([f, te, unet]) => ({ adapter: model.loadAdapter(files[f]!), te, unet }));
}

async function runtimeVsFused(list: Array<[string, number, number]>): Promise<void> {
  await model.setAdapters(spec(list), { mode: 'fused' });
  const fused = await outputs();
  await model.setAdapters(spec(list));
  const runtime = await outputs();
  await model.setAdapters([]);
  const base = await outputs();
  for (const k of ['unet', 'te', 'skip2'] as const) {
    expect(maxAbsDiff(runtime[k], fused[k]), `${k} runtime vs fused`).toBeLessThan(ATOL);
  }
  // The adapters must have changed something the comparison sees.
  expect(maxAbsDiff(fused.unet, base.unet)).toBeGreaterThan(100 * ATOL);
  if (list.some(([, te]) => te !== 0)) expect(maxAbsDiff(fused.te, base.te)).toBeGreaterThan(100 * ATOL);
}

describe('runtime-strength adapters match the fused weights', () => {
  for (const s of [0.3, -0.6]) {
    it(`golden kohya LoRA at strength ${s} (TE and UNet, clip skip 1 and 2)`, () => runtimeVsFused([['kohya', s, s]]), SLOW);
  }
  it('separate text-encoder and UNet strengths, one of them 0', async () => {
    await runtimeVsFused([['peft', 0, 0.8]]);
    await runtimeVsFused([['peft', 1.2, 0.25]]);
  }, SLOW);
  it('LoCon 3x3 convs (strided downsampler included) and a LoHa dense delta', () => runtimeVsFused([['lycoris', 0, 0.9]]), SLOW);
  it('two and three stacked adapters', async () => {
    await runtimeVsFused([['kohya', 0.5, 0.7], ['other', 0.4, -0.3]]);
    await runtimeVsFused([['kohya', 0.5, 0.7], ['other', 0.4, -0.3], ['lycoris', 0, 0.6]]);
  }, SLOW);
});

describe('runtime adapters reuse sessions', () => {
  it('a strength change and a same-shape swap create no session; a new signature creates exactly one per component', async () => {
    await model.setAdapters(spec([['kohya', 0.7, 0.7]]));
    const create = vi.spyOn(Session, 'create');
    try {
      const builds = model.adapterSessionBuilds;
      await model.setAdapters(spec([['kohya', 0.2, 1.1]]));
      const a = await outputs();
      await model.setAdapters(spec([['other', 0.2, 1.1]]));
      const b = await outputs();
      await model.setAdapters(spec([['peft', 0.9, 0.9]]));
      expect(create).not.toHaveBeenCalled();
      expect(model.adapterSessionBuilds).toBe(builds);
      // the swap fed new tensors: the outputs follow the fused result of the new adapter
      await model.setAdapters(spec([['other', 0.2, 1.1]]), { mode: 'fused' });
      const fusedOther = await outputs();
      expect(maxAbsDiff(b.unet, fusedOther.unet)).toBeLessThan(ATOL);
      expect(maxAbsDiff(b.te, fusedOther.te)).toBeLessThan(ATOL);
      expect(maxAbsDiff(a.unet, b.unet)).toBeGreaterThan(100 * ATOL);
      create.mockClear();
      const before = model.adapterSessionBuilds;
      // three same-shape LoRAs: a slot count not built before, for both components
      await model.setAdapters(spec([['kohya', 0.2, 1.1], ['third', 0.3, 0.3], ['other', 0.1, 0.1]]));
      expect(create).toHaveBeenCalledTimes(2);
      expect(model.adapterSessionBuilds).toBe(before + 2);
      create.mockClear();
      // the same pair in the other order, at other strengths: the cached graphs
      await model.setAdapters(spec([['other', 0.5, 0.5], ['third', 0.9, 0.1], ['kohya', 0.4, 0.5]]));
      await model.setAdapters(spec([['peft', 0.7, 0.7]]));
      expect(create).not.toHaveBeenCalled();
    } finally {
      create.mockRestore();
    }
  }, SLOW);

  it('with no adapter, or all strengths 0, the base sessions run (no adapter inputs)', async () => {
    await model.setAdapters(spec([['kohya', 0.7, 0.7]]));
    expect(model.unet.inputNames.some((n) => n.startsWith('lora.'))).toBe(true);
    await model.setAdapters([]);
    expect(model.unet.inputNames.some((n) => n.startsWith('lora.'))).toBe(false);
    expect(model.textEncoder.inputNames).toEqual(['input_ids']);
    await model.setAdapters(spec([['kohya', 0, 0]]));
    expect(model.unet.inputNames.some((n) => n.startsWith('lora.'))).toBe(false);
    const base = await outputs();
    expect(maxAbsDiff(base.unet, unetGolden.getFloat32(`${caseName}.out`))).toBeLessThan(ATOL);
  });

  it('prompt encodings are cached per text-encoder adapter state', async () => {
    await model.setAdapters(spec([['kohya', 0.5, 0.5]]));
    const half = (await model.prompts.encode('a red square on a grey gradient')).states;
    await model.setAdapters(spec([['kohya', 1.0, 0.5]]));
    const full = (await model.prompts.encode('a red square on a grey gradient')).states;
    expect(maxAbsDiff(half, full)).toBeGreaterThan(100 * ATOL);
    await model.setAdapters(spec([['kohya', 0.5, 0.5]]));
    expect(maxAbsDiff((await model.prompts.encode('a red square on a grey gradient')).states, half)).toBe(0);
    await model.setAdapters(spec([['kohya', 0.5, 0.5]]), { mode: 'fused' });
    expect(maxAbsDiff((await model.prompts.encode('a red square on a grey gradient')).states, half)).toBeLessThan(ATOL);
  }, SLOW);

  it('a prompt encoder whose session was evicted is not reused (cache of one session)', async () => {
    const small = await StableDiffusionModel.load(goldenPath('models', 'diffusers'), { adapterSessionLimit: 1 });
    try {
      const a = (f: string) => ({ adapter: small.loadAdapter(files[f]!), te: 0.5, unet: 0 });
      await small.setAdapters([a('kohya')]);
      const first = (await small.prompts.encode('blue circle')).states;
      await small.setAdapters([a('kohya'), a('other')]); // evicts the one-slot TE session
      await small.setAdapters([a('kohya')]); // rebuilt
      expect(small.adapterSessionBuilds).toBe(3);
      expect(maxAbsDiff((await small.prompts.encode('blue circle')).states, first)).toBeLessThan(1e-6);
      expect((await small.prompts.encode('green triangle')).states.length).toBe(first.length);
    } finally {
      await small.release();
    }
  }, SLOW);

  it('rejects a non-finite strength and an unknown mode', async () => {
    await expect(model.setAdapters(spec([['kohya', Number.NaN, 1]]))).rejects.toThrow(/not a finite number/);
    await expect(model.setAdapters(spec([['kohya', 1, 1]]), { mode: 'baked' as 'fused' })).rejects.toThrow(/mode "baked"/);
  });
});
