// kohya, PEFT and legacy diffusers LoRA naming, LoCon convs, alpha conventions, stacking
// several adapters with their own strengths, and the refusals for files that do not fit.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildModuleIndex, describeMatch, fuseAdapters, fuseAdaptersFast, loadAdapter, moduleDelta, runtimeModules, runtimeSignature } from '../../src/adapters/index.ts';
import { RedlineError } from '../../src/errors.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import { writeSafetensors } from '../../src/tensor/safetensors.ts';
import { maxAbsDiff, randn, refMatmul, rng, tinyModel } from './helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'redline-lora-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const model = tinyModel();
const index = buildModuleIndex(model);
const r = rng(11);
const scalar = (v: number) => new Tensor('f32', [], Float32Array.of(v));
let n = 0;
const write = (tensors: Record<string, Tensor>, metadata?: Record<string, string>) => {
  const p = join(dir, `a${n++}.safetensors`);
  writeSafetensors(p, tensors, metadata);
  return p;
};
const errorOf = (f: () => unknown): RedlineError => {
  try {
    f();
  } catch (e) {
    if (e instanceof RedlineError) return e;
    throw e;
  }
  throw new Error('expected a RedlineError');
};

const TO_Q = 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q'; // [8, 8]
const TO_K = 'down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k'; // [8, 12]
const TO_OUT = 'up_blocks.1.attentions.2.transformer_blocks.0.attn1.to_out.0'; // [16, 16]
const PROJ_IN = 'down_blocks.0.attentions.0.proj_in'; // [8, 8, 1, 1]
const CONV = 'down_blocks.0.resnets.0.conv1'; // [8, 8, 3, 3]
const Q_PROJ = 'text_model.encoder.layers.1.self_attn.q_proj'; // [12, 12]
const flat = (c: 'unet' | 'te', m: string) => `lora_${c}_${m.replace(/\./g, '_')}`;

function expectDelta(path: string, module: string, up: Tensor, down: Tensor, scale: number) {
  const a = loadAdapter(path, index);
  const m = a.modules.find((x) => x.target.module === module)!;
  expect(m, module).toBeDefined();
  expect(m.scale).toBeCloseTo(scale, 12);
  const want = refMatmul(up.toFloat32(), up.shape[0]!, down.shape[0]!, down.toFloat32(), down.numel / down.shape[0]!);
  expect(maxAbsDiff(moduleDelta(m).data, want)).toBeLessThan(1e-6);
  return a;
}

describe('kohya LoRA', () => {
  const down = randn([4, 8], r);
  const up = randn([8, 4], r);
  it('alpha/rank scales the delta', () => {
    expectDelta(write({ [`${flat('unet', TO_Q)}.lora_down.weight`]: down, [`${flat('unet', TO_Q)}.lora_up.weight`]: up, [`${flat('unet', TO_Q)}.alpha`]: scalar(2) }), TO_Q, up, down, 0.5);
  });
  it('alpha missing means alpha = rank', () => {
    expectDelta(write({ [`${flat('unet', TO_Q)}.lora_down.weight`]: down, [`${flat('unet', TO_Q)}.lora_up.weight`]: up }), TO_Q, up, down, 1);
  });
  it('alpha 0 means alpha = rank (kohya)', () => {
    expectDelta(write({ [`${flat('unet', TO_Q)}.lora_down.weight`]: down, [`${flat('unet', TO_Q)}.lora_up.weight`]: up, [`${flat('unet', TO_Q)}.alpha`]: scalar(0) }), TO_Q, up, down, 1);
  });
  it('text-encoder modules by lora_te_ + module path', () => {
    const d = randn([2, 12], r);
    const u = randn([12, 2], r);
    const a = expectDelta(write({ [`${flat('te', Q_PROJ)}.lora_down.weight`]: d, [`${flat('te', Q_PROJ)}.lora_up.weight`]: u, [`${flat('te', Q_PROJ)}.alpha`]: scalar(1) }), Q_PROJ, u, d, 0.5);
    expect(a.modules[0]!.target.component).toBe('text_encoder');
    expect(a.format).toBe('kohya');
  });
  it('module names with underscores inside a segment (to_out_0, proj_in) resolve from the model', () => {
    const d = randn([3, 16], r);
    const u = randn([16, 3], r);
    expectDelta(write({ [`${flat('unet', TO_OUT)}.lora_down.weight`]: d, [`${flat('unet', TO_OUT)}.lora_up.weight`]: u }), TO_OUT, u, d, 1);
  });
  it('CompVis-named UNet modules (lora_unet_input_blocks_1_1_proj_in) map through the checkpoint key map', () => {
    const d = randn([2, 8, 1, 1], r);
    const u = randn([8, 2, 1, 1], r);
    expectDelta(write({ 'lora_unet_input_blocks_1_1_proj_in.lora_down.weight': d, 'lora_unet_input_blocks_1_1_proj_in.lora_up.weight': u }), PROJ_IN, u, d, 1);
  });
});

describe('LoCon (kohya conv LoRA)', () => {
  it('3x3 down and 1x1 up give a conv delta [out, in, 3, 3] = up @ down.flatten', () => {
    const d = randn([3, 8, 3, 3], r);
    const u = randn([8, 3, 1, 1], r);
    const a = expectDelta(write({ [`${flat('unet', CONV)}.lora_down.weight`]: d, [`${flat('unet', CONV)}.lora_up.weight`]: u, [`${flat('unet', CONV)}.alpha`]: scalar(1.5) }), CONV, u, d, 0.5);
    expect(a.modules[0]!.kind).toBe('locon');
    const rt = runtimeModules(a)[0]!;
    expect(rt.form).toBe('conv');
    expect(rt.downShape).toEqual([3, 8, 3, 3]);
    expect(rt.upShape).toEqual([8, 3]);
  });
});

describe('PEFT / diffusers LoRA', () => {
  const A = randn([4, 12], r);
  const B = randn([8, 4], r);
  it('unet.<module>.lora_A/lora_B, no alpha: scale 1', () => {
    const a = expectDelta(write({ [`unet.${TO_K}.lora_A.weight`]: A, [`unet.${TO_K}.lora_B.weight`]: B }), TO_K, B, A, 1);
    expect(a.format).toBe('peft');
  });
  it('lora_alpha from diffusers lora_adapter_metadata', () => {
    expectDelta(write({ [`unet.${TO_K}.lora_A.weight`]: A, [`unet.${TO_K}.lora_B.weight`]: B }, { lora_adapter_metadata: JSON.stringify({ 'unet.r': 4, 'unet.lora_alpha': 8 }) }), TO_K, B, A, 2);
  });
  it('text encoder with and without the text_model. level', () => {
    const a = randn([2, 12], r);
    const b = randn([12, 2], r);
    expectDelta(write({ [`text_encoder.${Q_PROJ}.lora_A.weight`]: a, [`text_encoder.${Q_PROJ}.lora_B.weight`]: b }), Q_PROJ, b, a, 1);
    const short = Q_PROJ.replace('text_model.', '');
    expectDelta(write({ [`text_encoder.${short}.lora_A.weight`]: a, [`text_encoder.${short}.lora_B.weight`]: b }), Q_PROJ, b, a, 1);
  });
  it("diffusers' first format (attention processors, lora_linear_layer)", () => {
    const head = TO_Q.replace(/\.to_q$/, '');
    const d = randn([2, 8], r);
    const u = randn([8, 2], r);
    const a = expectDelta(write({ [`unet.${head}.processor.to_q_lora.down.weight`]: d, [`unet.${head}.processor.to_q_lora.up.weight`]: u }), TO_Q, u, d, 1);
    expect(a.format).toBe('diffusers-legacy');
  });
});

describe('stacking and strengths', () => {
  const d1 = randn([2, 8], r), u1 = randn([8, 2], r), d2 = randn([3, 8], r), u2 = randn([8, 3], r);
  const te1d = randn([2, 12], r), te1u = randn([12, 2], r);
  const one = loadAdapter(write({
    [`${flat('unet', TO_Q)}.lora_down.weight`]: d1, [`${flat('unet', TO_Q)}.lora_up.weight`]: u1, [`${flat('unet', TO_Q)}.alpha`]: scalar(1),
    [`${flat('te', Q_PROJ)}.lora_down.weight`]: te1d, [`${flat('te', Q_PROJ)}.lora_up.weight`]: te1u,
  }), index);
  const two = loadAdapter(write({ [`unet.${TO_Q}.lora_A.weight`]: d2, [`unet.${TO_Q}.lora_B.weight`]: u2 }), index);

  it('each adapter adds strength * scale * delta; te and unet strengths are separate', () => {
    const fused = fuseAdapters(model.components, [{ adapter: one, te: 0.3, unet: 0.8 }, { adapter: two, te: 1, unet: -0.5 }]);
    const base = model.components.unet.get(`${TO_Q}.weight`).toFloat32();
    const a = refMatmul(u1.toFloat32(), 8, 2, d1.toFloat32(), 8);
    const b = refMatmul(u2.toFloat32(), 8, 3, d2.toFloat32(), 8);
    const want = base.map((v, i) => v + 0.8 * 0.5 * a[i]! - 0.5 * b[i]!);
    expect(maxAbsDiff(fused.unet.get(`${TO_Q}.weight`)!.toFloat32(), want)).toBeLessThan(1e-6);
    const tb = model.components.text_encoder.get(`${Q_PROJ}.weight`).toFloat32();
    const t = refMatmul(te1u.toFloat32(), 12, 2, te1d.toFloat32(), 12);
    expect(maxAbsDiff(fused.text_encoder.get(`${Q_PROJ}.weight`)!.toFloat32(), tb.map((v, i) => v + 0.3 * t[i]!))).toBeLessThan(1e-6);
    expect([...fused.unet.keys()]).toEqual([`${TO_Q}.weight`]);
  });

  it('strength 0 leaves that component untouched and the base source is never modified', () => {
    const before = new Float32Array(model.components.text_encoder.get(`${Q_PROJ}.weight`).toFloat32());
    const fused = fuseAdapters(model.components, [{ adapter: one, te: 0, unet: 1 }]);
    expect(fused.text_encoder.size).toBe(0);
    fuseAdapters(model.components, [{ adapter: one, te: 5, unet: 5 }]);
    expect(maxAbsDiff(model.components.text_encoder.get(`${Q_PROJ}.weight`).toFloat32(), before)).toBe(0);
  });

  it('fp16 base weights stay fp16 after fusing', () => {
    const w = model.components.unet.get(`${TO_Q}.weight`).to('f16');
    const src = { unet: { ...model.components.unet, names: () => [`${TO_Q}.weight`], has: () => true, shape: () => [8, 8], dtype: () => 'f16' as const, get: () => w }, text_encoder: model.components.text_encoder };
    const fused = fuseAdapters(src, [{ adapter: two, te: 1, unet: 1 }]);
    expect(fused.unet.get(`${TO_Q}.weight`)!.dtype).toBe('f16');
  });

  it('runtime description: x @ down^T @ up^T * scale equals x @ delta^T * scale', () => {
    const rt = runtimeModules(one).find((m) => m.module === TO_Q)!;
    expect(rt.form).toBe('matmul');
    const x = randn([3, 8], r).toFloat32();
    const h = refMatmul(x, 3, 8, transpose(rt.down!, rt.downShape![0]!, rt.downShape![1]!), rt.downShape![0]!);
    const y = refMatmul(Float32Array.from(h), 3, rt.downShape![0]!, transpose(rt.up!, rt.upShape![0]!, rt.upShape![1]!), 8);
    const delta = refMatmul(u1.toFloat32(), 8, 2, d1.toFloat32(), 8);
    const y2 = refMatmul(x, 3, 8, transpose(Float32Array.from(delta), 8, 8), 8);
    expect(maxAbsDiff(y, y2)).toBeLessThan(1e-5);
    expect(rt.scale).toBe(0.5);
    // Same targets and ranks => same signature => swappable without a rebuild.
    expect(runtimeSignature(runtimeModules(one))).not.toBe(runtimeSignature(runtimeModules(two)));
  });
});

function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = a[i * cols + j]!;
  return out;
}

describe('refusals', () => {
  it('an SDXL LoRA (lora_te1_/lora_te2_ names) is refused by family', () => {
    const e = errorOf(() => loadAdapter(write({ 'lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight': randn([2, 12], r), 'lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight': randn([12, 2], r) }), index));
    expect(e.code).toBe('adapter_family_mismatch');
    expect(e.message).toMatch(/Stable Diffusion XL/);
  });
  it('an SD 2 LoRA (1024-wide cross-attention input) is refused by family', () => {
    const e = errorOf(() => loadAdapter(write({ [`${flat('unet', TO_K)}.lora_down.weight`]: randn([2, 1024], r), [`${flat('unet', TO_K)}.lora_up.weight`]: randn([8, 2], r) }), index));
    expect(e.code).toBe('adapter_family_mismatch');
    expect(e.message).toMatch(/Stable Diffusion 2/);
  });
  it('keys that match nothing: refused with the count and a few names', () => {
    const keys: Record<string, Tensor> = {};
    for (let i = 0; i < 7; i++) keys[`emb_params_${i}`] = randn([2, 2], r);
    const e = errorOf(() => loadAdapter(write(keys), index));
    expect(e.code).toBe('adapter_no_match');
    expect(e.message).toMatch(/none of its 7 keys.*7 unmatched.*emb_params_0/);
  });
  it('a partial match loads and reports how many keys applied', () => {
    const a = loadAdapter(write({
      [`${flat('unet', TO_Q)}.lora_down.weight`]: randn([2, 8], r), [`${flat('unet', TO_Q)}.lora_up.weight`]: randn([8, 2], r),
      'lora_unet_not_a_module.lora_down.weight': randn([2, 8], r), 'lora_unet_not_a_module.lora_up.weight': randn([8, 2], r),
    }), index);
    expect(a.appliedKeyCount).toBe(2);
    expect(a.unmatchedKeys.sort()).toEqual(['lora_unet_not_a_module.lora_down.weight', 'lora_unet_not_a_module.lora_up.weight']);
    expect(describeMatch(a)).toMatch(/applied 2 of 4 keys to 1 modules; 2 keys matched nothing \(lora_unet_not_a_module/);
  });
  it('factors whose product does not make the weight shape are an error, never a broadcast', () => {
    const e = errorOf(() => loadAdapter(write({ [`${flat('unet', TO_Q)}.lora_down.weight`]: randn([2, 4], r), [`${flat('unet', TO_Q)}.lora_up.weight`]: randn([8, 2], r) }), index));
    expect(e.code).toBe('adapter_shape_mismatch');
    expect(e.message).toMatch(/down \[2, 4\] does not make its weight \[8, 8\]/);
  });
  it('an up factor without its down factor is an error', () => {
    const e = errorOf(() => loadAdapter(write({ [`${flat('unet', TO_Q)}.lora_up.weight`]: randn([8, 2], r) }), index));
    expect(e.message).toMatch(/lacks its lora_down/);
  });
  it('DoRA parts are refused by name, not applied as plain LoRA', () => {
    const e = errorOf(() => loadAdapter(write({ [`${flat('unet', TO_Q)}.lora_down.weight`]: randn([2, 8], r), [`${flat('unet', TO_Q)}.lora_up.weight`]: randn([8, 2], r), [`${flat('unet', TO_Q)}.dora_scale`]: randn([8, 1], r) }), index));
    expect(e.code).toBe('adapter_unsupported');
    expect(e.message).toMatch(/dora_scale/);
  });
  it('a pickle file is refused without being read as one', () => {
    const p = join(dir, 'evil.safetensors');
    writeFileSync(p, Buffer.from([0x80, 0x04, 0x95, 0, 0, 0, 0, 0, 0, 0, 0x2e]));
    expect(errorOf(() => loadAdapter(p, index)).code).toBe('pickle_refused');
  });
});

describe('ONNX Runtime fuse path', () => {
  it('gives the JS result for stacked LoRA + LoHa adapters, f32 and f16 bases', async () => {
    const rr = rng(23);
    const a = loadAdapter(write({
      [`${flat('unet', TO_Q)}.lora_down.weight`]: randn([2, 8], rr), [`${flat('unet', TO_Q)}.lora_up.weight`]: randn([8, 2], rr), [`${flat('unet', TO_Q)}.alpha`]: scalar(1),
      [`${flat('unet', CONV)}.lora_down.weight`]: randn([3, 8, 3, 3], rr), [`${flat('unet', CONV)}.lora_up.weight`]: randn([8, 3, 1, 1], rr),
      [`${flat('te', Q_PROJ)}.lora_down.weight`]: randn([2, 12], rr), [`${flat('te', Q_PROJ)}.lora_up.weight`]: randn([12, 2], rr),
    }), index);
    const b = loadAdapter(write({
      [`${flat('unet', TO_Q)}.hada_w1_a`]: randn([8, 2], rr), [`${flat('unet', TO_Q)}.hada_w1_b`]: randn([2, 8], rr),
      [`${flat('unet', TO_Q)}.hada_w2_a`]: randn([8, 2], rr), [`${flat('unet', TO_Q)}.hada_w2_b`]: randn([2, 8], rr),
      [`unet.${TO_K}.lora_A.weight`]: randn([4, 12], rr), [`unet.${TO_K}.lora_B.weight`]: randn([8, 4], rr),
    }), index);
    const list = [{ adapter: a, te: 0.4, unet: 0.9 }, { adapter: b, te: 1, unet: -0.3 }];
    const ref = fuseAdapters(model.components, list);
    const fast = await fuseAdaptersFast(model.components, list);
    for (const c of ['unet', 'text_encoder'] as const) {
      expect([...fast[c].keys()].sort()).toEqual([...ref[c].keys()].sort());
      for (const [k, t] of ref[c]) expect(maxAbsDiff(fast[c].get(k)!.toFloat32(), t.toFloat32()), k).toBeLessThan(1e-5);
    }
    const half = (src: typeof model.components.unet) => ({
      names: () => src.names(), has: (n: string) => src.has(n), shape: (n: string) => src.shape(n), dtype: () => 'f16' as const, get: (n: string) => src.get(n).to('f16'),
    });
    const h = { unet: half(model.components.unet), text_encoder: half(model.components.text_encoder) };
    const refH = fuseAdapters(h, list);
    const fastH = await fuseAdaptersFast(h, list);
    for (const [k, t] of refH.unet) {
      expect(fastH.unet.get(k)!.dtype).toBe('f16');
      // Both round W + delta to fp16 once; values |w| < 4, so one fp16 step is at most 2^-9.
      expect(maxAbsDiff(fastH.unet.get(k)!.toFloat32(), t.toFloat32()), k).toBeLessThanOrEqual(2 ** -9);
    }
  });
});
