// The adapter registry reads kohya metadata and Redline sidecars as untrusted input.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cleanText, listAdapters, parseLoraSpec, parseSidecar, strengthForLevel } from '../../src/adapters/index.ts';
import { writeSafetensors } from '../../src/tensor/safetensors.ts';
import { randn, rng } from './helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'redline-registry-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const r = rng(3);
const lora = (extra: Record<string, ReturnType<typeof randn>> = {}) => ({
  'lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight': randn([4, 8, 1, 1], r),
  'lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight': randn([8, 4, 1, 1], r),
  ...extra,
});

writeSafetensors(join(dir, 'blood.safetensors'), lora(), {
  ss_network_module: 'networks.lora',
  ss_network_dim: '32',
  ss_network_alpha: '16.0',
  ss_base_model_version: 'sd_v1',
  ss_sd_model_name: 'v1-5-pruned-emaonly.safetensors',
  ss_resolution: '(512, 512)',
  ss_output_name: 'blood\u001b[31m \u202eevil',
  ss_tag_frequency: JSON.stringify({ '10_set': { 'red paint': 12, splatter: 30, 'x\u0007y': 5 }, '5_other': { splatter: 2, texture: 7 } }),
});
writeFileSync(join(dir, 'blood.json'), JSON.stringify({ category: 'graphic-injury', intensity: { '1': 0.3, '2': 0.55, '3': 0.8 }, notes: 'calibrated\non 20 seeds', extra: 1 }));
mkdirSync(join(dir, 'sub'));
writeSafetensors(join(dir, 'sub', 'loha.safetensors'), {
  'lora_unet_x.hada_w1_a': randn([4, 2], r), 'lora_unet_x.hada_w1_b': randn([2, 4], r), 'lora_unet_x.hada_w2_a': randn([4, 2], r), 'lora_unet_x.hada_w2_b': randn([2, 4], r),
}, { ss_base_model_version: 'sdxl_base_v1-0', ss_network_dim: 'lots' });
writeSafetensors(join(dir, 'sub', 'xl.safetensors'), { 'lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight': randn([2, 4], r), 'lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight': randn([4, 2], r) });
writeFileSync(join(dir, 'old.ckpt'), Buffer.from('PK\x03\x04'));

describe('listAdapters', async () => {
  const list = await listAdapters(dir, { cacheFile: null });
  const by = (f: string) => list.find((a) => a.file === f)!;

  it('finds adapter files recursively, pickles included as refused entries', () => {
    expect(list.map((a) => a.file).sort()).toEqual(['blood.safetensors', 'old.ckpt', 'sub/loha.safetensors', 'sub/xl.safetensors']);
    expect(by('old.ckpt').warnings.join()).toMatch(/pickles are refused/);
    expect(by('old.ckpt').hashes).toBeNull();
  });

  it('reads kohya metadata: rank, alpha, base model, resolution, top tags summed over datasets', () => {
    const b = by('blood.safetensors');
    expect(b.kind).toBe('lora');
    expect(b.family).toBe('sd1');
    expect(b.meta.rank).toBe(32);
    expect(b.meta.alpha).toBe(16);
    expect(b.meta.baseModel).toBe('sd_v1');
    expect(b.meta.trainedOn).toBe('v1-5-pruned-emaonly.safetensors');
    expect(b.meta.resolution).toBe('(512, 512)');
    expect(b.meta.topTags).toEqual([{ tag: 'splatter', count: 32 }, { tag: 'red paint', count: 12 }, { tag: 'texture', count: 7 }, { tag: 'xy', count: 5 }]);
    expect(b.hashes!.a1111).toMatch(/^[0-9a-f]{12}$/);
    expect(b.hashes!.a1111).toBe(b.hashes!.addnet!.slice(0, 12));
  });

  it('strips escape sequences, bidi overrides and control characters from metadata', () => {
    const t = by('blood.safetensors').meta.title!;
    expect(t).toBe('blood[31m evil');
    expect(/[\u0000-\u001f\u202e]/.test(t)).toBe(false);
  });

  it('validates the sidecar: keeps valid fields, reports unknown ones', () => {
    const b = by('blood.safetensors');
    expect(b.sidecar).toEqual({ category: 'graphic-injury', intensity: { '1': 0.3, '2': 0.55, '3': 0.8 }, notes: 'calibrated on 20 seeds' });
    expect(b.warnings).toEqual(['sidecar field "extra" is not known and was ignored']);
  });

  it('intensity levels map to the calibrated strength; an uncalibrated level is an error', () => {
    const b = by('blood.safetensors');
    expect(strengthForLevel(b, 2)).toBe(0.55);
    expect(() => strengthForLevel(b, 4)).toThrow(/no calibrated strength for intensity level 4 \(calibrated: 1, 2, 3\)/);
    expect(() => strengthForLevel(by('sub/loha.safetensors'), 1)).toThrow(/no sidecar calibration/);
  });

  it('kind and family from the tensors, bad numbers reported', () => {
    const l = by('sub/loha.safetensors');
    expect(l.kind).toBe('loha');
    expect(l.family).toBe('sdxl');
    expect(l.warnings.join()).toMatch(/ss_network_dim is not a whole number/);
    expect(by('sub/xl.safetensors').family).toBe('sdxl');
  });
});

describe('sidecar validation', () => {
  it('rejects bad categories, out-of-range strengths and odd level names', () => {
    const { sidecar, problems } = parseSidecar({ category: 'Gore <script>', intensity: { '1': 9, 'ok': 0.5, 'bad level': 0.2, '2': 'x' } });
    expect(sidecar).toEqual({ intensity: { ok: 0.5 } });
    expect(problems).toHaveLength(4);
  });
  it('a non-object sidecar is refused', () => {
    expect(parseSidecar([1, 2]).sidecar).toBeNull();
  });
});

describe('text and spec parsing', () => {
  it('cleanText caps length', () => {
    expect(cleanText('a'.repeat(500), 10)).toHaveLength(10);
    expect(cleanText(42, 10)).toBe('');
  });
  it('--lora FILE:STRENGTH[:TE_STRENGTH], parsed from the right', () => {
    expect(parseLoraSpec('a.safetensors')).toEqual({ path: 'a.safetensors', unet: 1, te: 1 });
    expect(parseLoraSpec('a.safetensors:0.7')).toEqual({ path: 'a.safetensors', unet: 0.7, te: 0.7 });
    expect(parseLoraSpec('C:/loras/a.safetensors:0.7:-0.25')).toEqual({ path: 'C:/loras/a.safetensors', unet: 0.7, te: -0.25 });
    expect(() => parseLoraSpec('a.safetensors:99')).toThrow(/out of range/);
    expect(() => parseLoraSpec(':0.5')).toThrow(/names no file/);
  });
});
