// LoHa and LoKr files built from known factors; the applied delta is checked against the
// LyCORIS formulas computed here with plain loops.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildModuleIndex, fuseAdapters, loadAdapter, moduleDelta, runtimeModules } from '../../src/adapters/index.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import { writeSafetensors } from '../../src/tensor/safetensors.ts';
import { maxAbsDiff, randn, refMatmul, rng, tinyModel } from './helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'redline-lycoris-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const model = tinyModel();
const index = buildModuleIndex(model);
const r = rng(7);
const scalar = (v: number) => new Tensor('f32', [], Float32Array.of(v));

const TO_Q = 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q'; // [8, 8]
const TO_K = 'down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k'; // [8, 12]
const CONV = 'down_blocks.0.resnets.0.conv1'; // [8, 8, 3, 3]
const FC1 = 'text_model.encoder.layers.0.mlp.fc1'; // [24, 12]
const kohya = (component: 'unet' | 'te', module: string) => `lora_${component}_${module.replace(/\./g, '_')}`;

/** W[p,q,k,l] = sum_ij t[i,j,k,l] wa[i,p] wb[j,q] */
function refTucker(t: Tensor, wa: Tensor, wb: Tensor): Float64Array {
  const [r1, r2, kh, kw] = t.shape as number[];
  const out = wa.shape[1]!;
  const inp = wb.shape[1]!;
  const T = t.toFloat32(), A = wa.toFloat32(), B = wb.toFloat32();
  const res = new Float64Array(out * inp * kh! * kw!);
  for (let p = 0; p < out; p++) for (let q = 0; q < inp; q++) for (let k = 0; k < kh!; k++) for (let l = 0; l < kw!; l++) {
    let s = 0;
    for (let i = 0; i < r1!; i++) for (let j = 0; j < r2!; j++) s += T[((i * r2! + j) * kh! + k) * kw! + l]! * A[i * out + p]! * B[j * inp + q]!;
    res[((p * inp + q) * kh! + k) * kw! + l] = s;
  }
  return res;
}

function refKron(w1: Float64Array | Float32Array, a: number, b: number, w2: Float64Array | Float32Array, p: number, q: number, kk = 1): Float64Array {
  const out = new Float64Array(a * p * b * q * kk);
  for (let i = 0; i < a; i++) for (let j = 0; j < b; j++) for (let k = 0; k < p; k++) for (let l = 0; l < q; l++) for (let x = 0; x < kk; x++) {
    out[((i * p + k) * (b * q) + (j * q + l)) * kk + x] = w1[i * b + j]! * w2[(k * q + l) * kk + x]!;
  }
  return out;
}

describe('LoHa', () => {
  const rank = 2;
  const alpha = 1;
  const f = {
    w1a: randn([8, rank], r), w1b: randn([rank, 8], r), w2a: randn([8, rank], r), w2b: randn([rank, 8], r),
    t1: randn([rank, rank, 3, 3], r), t2: randn([rank, rank, 3, 3], r),
    c1a: randn([rank, 8], r), c1b: randn([rank, 8], r), c2a: randn([rank, 8], r), c2b: randn([rank, 8], r),
  };
  const file = join(dir, 'loha.safetensors');
  const q = kohya('unet', TO_Q);
  const c = kohya('unet', CONV);
  writeSafetensors(file, {
    [`${q}.hada_w1_a`]: f.w1a, [`${q}.hada_w1_b`]: f.w1b, [`${q}.hada_w2_a`]: f.w2a, [`${q}.hada_w2_b`]: f.w2b, [`${q}.alpha`]: scalar(alpha),
    [`${c}.hada_w1_a`]: f.c1a, [`${c}.hada_w1_b`]: f.c1b, [`${c}.hada_w2_a`]: f.c2a, [`${c}.hada_w2_b`]: f.c2b,
    [`${c}.hada_t1`]: f.t1, [`${c}.hada_t2`]: f.t2, [`${c}.alpha`]: scalar(4),
  });
  const adapter = loadAdapter(file, index);

  it('reads both modules as LoHa with scale alpha / rank', () => {
    expect(adapter.modules.map((m) => [m.target.module, m.kind, m.scale]).sort()).toEqual([
      [TO_Q, 'loha', alpha / rank],
      [CONV, 'loha', 4 / rank],
    ]);
    expect(adapter.unmatchedKeys).toEqual([]);
  });

  it('linear: delta = (w1a @ w1b) * (w2a @ w2b), elementwise', () => {
    const m = adapter.modules.find((x) => x.target.module === TO_Q)!;
    const w1 = refMatmul(f.w1a.toFloat32(), 8, rank, f.w1b.toFloat32(), 8);
    const w2 = refMatmul(f.w2a.toFloat32(), 8, rank, f.w2b.toFloat32(), 8);
    const want = w1.map((v, i) => v * w2[i]!);
    expect(maxAbsDiff(moduleDelta(m).data, want)).toBeLessThan(1e-6);
  });

  it('conv with tucker cores: delta = tucker(t1, w1a, w1b) * tucker(t2, w2a, w2b)', () => {
    const m = adapter.modules.find((x) => x.target.module === CONV)!;
    const a = refTucker(f.t1, f.c1a, f.c1b);
    const b = refTucker(f.t2, f.c2a, f.c2b);
    const d = moduleDelta(m);
    expect(d.shape).toEqual([8, 8, 3, 3]);
    expect(maxAbsDiff(d.data, a.map((v, i) => v * b[i]!))).toBeLessThan(1e-5);
  });

  it('fusing at strength s adds s * alpha/rank * delta to the base weight', () => {
    const s = 0.6;
    const fused = fuseAdapters(model.components, [{ adapter, te: 1, unet: s }]);
    const base = model.components.unet.get(`${TO_Q}.weight`).toFloat32();
    const w1 = refMatmul(f.w1a.toFloat32(), 8, rank, f.w1b.toFloat32(), 8);
    const w2 = refMatmul(f.w2a.toFloat32(), 8, rank, f.w2b.toFloat32(), 8);
    const want = base.map((v, i) => v + s * (alpha / rank) * w1[i]! * w2[i]!);
    expect(maxAbsDiff(fused.unet.get(`${TO_Q}.weight`)!.toFloat32(), want)).toBeLessThan(1e-6);
  });

  it('is described to the runtime as a dense delta', () => {
    const mods = runtimeModules(adapter);
    expect(mods.every((m) => m.form === 'dense' && m.delta!.length === m.targetShape.reduce((a, b) => a * b, 1))).toBe(true);
  });
});

describe('LoKr', () => {
  const rank = 2;
  const f = {
    w1: randn([2, 3], r), w2a: randn([4, rank], r), w2b: randn([rank, 4], r),
    fw1: randn([4, 3], r), fw2: randn([6, 4], r),
    cw1a: randn([2, 1], r), cw1b: randn([1, 2], r), cw2: randn([4, 4, 3, 3], r),
  };
  const file = join(dir, 'lokr.safetensors');
  const k = kohya('unet', TO_K);
  const fc = kohya('te', FC1);
  const cv = kohya('unet', CONV);
  writeSafetensors(file, {
    [`${k}.lokr_w1`]: f.w1, [`${k}.lokr_w2_a`]: f.w2a, [`${k}.lokr_w2_b`]: f.w2b, [`${k}.alpha`]: scalar(3),
    [`${fc}.lokr_w1`]: f.fw1, [`${fc}.lokr_w2`]: f.fw2, [`${fc}.alpha`]: scalar(7),
    [`${cv}.lokr_w1_a`]: f.cw1a, [`${cv}.lokr_w1_b`]: f.cw1b, [`${cv}.lokr_w2`]: f.cw2, [`${cv}.alpha`]: scalar(0.5),
  });
  const adapter = loadAdapter(file, index);
  const mod = (name: string) => adapter.modules.find((m) => m.target.module === name)!;

  it('kron(w1, w2a @ w2b) with scale alpha / rank', () => {
    const m = mod(TO_K);
    expect(m.kind).toBe('lokr');
    expect(m.scale).toBe(3 / rank);
    const w2 = refMatmul(f.w2a.toFloat32(), 4, rank, f.w2b.toFloat32(), 4);
    expect(maxAbsDiff(moduleDelta(m).data, refKron(f.w1.toFloat32(), 2, 3, w2, 4, 4))).toBeLessThan(1e-6);
  });

  it('two full factors: scale 1 whatever alpha says (LyCORIS)', () => {
    const m = mod(FC1);
    expect(m.target.component).toBe('text_encoder');
    expect(m.scale).toBe(1);
    expect(maxAbsDiff(moduleDelta(m).data, refKron(f.fw1.toFloat32(), 4, 3, f.fw2.toFloat32(), 6, 4))).toBeLessThan(1e-6);
  });

  it('conv kernel factor: kron(w1a @ w1b, w2) over [out, in, kh, kw]', () => {
    const m = mod(CONV);
    expect(m.scale).toBe(0.5 / 1);
    const w1 = refMatmul(f.cw1a.toFloat32(), 2, 1, f.cw1b.toFloat32(), 2);
    const d = moduleDelta(m);
    expect(d.shape).toEqual([8, 8, 3, 3]);
    expect(maxAbsDiff(d.data, refKron(w1, 2, 2, f.cw2.toFloat32(), 4, 4, 9))).toBeLessThan(1e-6);
  });

  it('a kron that does not make the weight shape is refused, not broadcast', () => {
    const bad = join(dir, 'lokr-bad.safetensors');
    writeSafetensors(bad, { [`${k}.lokr_w1`]: randn([2, 2], r), [`${k}.lokr_w2`]: randn([4, 4], r) });
    expect(() => loadAdapter(bad, index)).toThrow(/adapter produces \[8, 8\] but the model weight is \[8, 12\]/);
  });
});
