// Merged weights from the kohya AND the PEFT LoRA files of the golden set must equal the
// reference merge (diffusers fuse_lora) stored in lora_goldens.safetensors.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { mergeToFile } from '../../src/adapters/merge.ts';
import { buildModuleIndex, describeMatch, fuseAdapters, fuseAdaptersFast, loadAdapter, moduleDelta, runtimeModules } from '../../src/adapters/index.ts';
import { openCheckpoint } from '../../src/models/checkpoint/index.ts';
import { SafetensorsFile } from '../../src/tensor/safetensors.ts';
import { goldenJson, goldenPath } from '../helpers/golden.ts';

interface Manifest {
  files: Record<string, { tensors?: Record<string, { shape: number[] }>; n_unet_modules?: number; n_te_modules?: number }>;
}
const manifest = goldenJson<Manifest>('manifest.json');
const goldens = SafetensorsFile.open(goldenPath('lora', 'lora_goldens.safetensors'));
const model = openCheckpoint(goldenPath('models', 'diffusers'));
afterAll(() => {
  goldens.close();
  model.close();
});

const index = buildModuleIndex(model);
const files = ['lora_kohya.safetensors', 'lora_peft.safetensors'];
// Merged-weight goldens: "merged_weight_scale<s>.<full module path>".
const mergedKeys = goldens.keys().filter((k) => k.startsWith('merged_weight_scale'));
const ATOL = 1e-6;

function locate(modulePath: string): { component: 'unet' | 'text_encoder'; weight: string } {
  const weight = `${modulePath}.weight`;
  if (model.components.text_encoder.has(weight)) return { component: 'text_encoder', weight };
  if (model.components.unet.has(weight)) return { component: 'unet', weight };
  throw new Error(`golden names an unknown module ${modulePath}`);
}

describe('golden LoRA merge', () => {
  it('the golden set provides merged weights to compare against', () => {
    expect(mergedKeys.length).toBeGreaterThan(0);
  });

  for (const file of files) {
    const adapter = loadAdapter(goldenPath('lora', file), index);
    const info = manifest.files[`lora/${file}`]!;

    it(`${file}: every key applies, to the module count the manifest states`, () => {
      expect(adapter.unmatchedKeys).toEqual([]);
      expect(adapter.appliedKeyCount).toBe(adapter.totalKeys);
      expect(describeMatch(adapter)).toMatch(/applied \d+ of \d+ keys/);
      const peft = manifest.files['lora/lora_peft.safetensors']!;
      const unet = adapter.modules.filter((m) => m.target.component === 'unet').length;
      const te = adapter.modules.filter((m) => m.target.component === 'text_encoder').length;
      expect(unet).toBe(peft.n_unet_modules);
      expect(te).toBe(peft.n_te_modules);
      expect(info).toBeDefined();
    });

    for (const key of mergedKeys) {
      const m = /^merged_weight_scale([0-9.]+)\.(.+)$/.exec(key)!;
      const scale = Number(m[1]);
      it(`${file}: ${m[2]} merged at ${scale} matches the reference (atol ${ATOL}), JS and ORT paths`, async () => {
        const { component, weight } = locate(m[2]!);
        const fused = fuseAdapters(model.components, [{ adapter, te: scale, unet: scale }]);
        const fast = await fuseAdaptersFast(model.components, [{ adapter, te: scale, unet: scale }]);
        expect(maxAbs(fast[component].get(weight)!.toFloat32(), goldens.getFloat32(key))).toBeLessThanOrEqual(ATOL);
        const got = fused[component].get(weight)!;
        const want = goldens.get(key);
        expect(got.shape).toEqual(want.shape);
        const g = got.toFloat32();
        const w = want.toFloat32();
        let maxDiff = 0;
        for (let i = 0; i < w.length; i++) maxDiff = Math.max(maxDiff, Math.abs(g[i]! - w[i]!));
        expect(maxDiff).toBeLessThanOrEqual(ATOL);
        // The merge must have changed the weight: guards against comparing base to base.
        const base = model.components[component].get(weight).toFloat32();
        let moved = 0;
        for (let i = 0; i < w.length; i++) moved = Math.max(moved, Math.abs(w[i]! - base[i]!));
        expect(moved).toBeGreaterThan(100 * ATOL);
      });
    }
  }

  it('the runtime factors (down, up, scale) rebuild the golden merged weights', () => {
    for (const file of files) {
      const mods = runtimeModules(loadAdapter(goldenPath('lora', file), index));
      for (const key of mergedKeys) {
        const m = /^merged_weight_scale([0-9.]+)\.(.+)$/.exec(key)!;
        const { component, weight } = locate(m[2]!);
        const rt = mods.find((x) => x.component === component && `${x.module}.weight` === weight)!;
        expect(rt.form).toBe('matmul');
        const [rank, inp] = rt.downShape as [number, number];
        const out = rt.upShape![0]!;
        const base = model.components[component].get(weight).toFloat32();
        const rebuilt = new Float32Array(base.length);
        for (let o = 0; o < out; o++) {
          for (let i = 0; i < inp; i++) {
            let s = 0;
            for (let r = 0; r < rank; r++) s += rt.up![o * rank + r]! * rt.down![r * inp + i]!;
            rebuilt[o * inp + i] = base[o * inp + i]! + Number(m[1]) * rt.scale * s;
          }
        }
        expect(maxAbs(rebuilt, goldens.getFloat32(key)), `${file} ${key}`).toBeLessThanOrEqual(ATOL);
      }
    }
  });

  it('the kohya and PEFT files give the same delta for every module', () => {
    const [kohya, peft] = files.map((f) => loadAdapter(goldenPath('lora', f), index));
    const byId = new Map(peft!.modules.map((m) => [`${m.target.component}:${m.target.module}`, m]));
    expect(byId.size).toBe(kohya!.modules.length);
    for (const k of kohya!.modules) {
      const p = byId.get(`${k.target.component}:${k.target.module}`)!;
      expect(p, k.target.module).toBeDefined();
      const dk = moduleDelta(k).data;
      const dp = moduleDelta(p).data;
      let maxDiff = 0;
      for (let i = 0; i < dk.length; i++) maxDiff = Math.max(maxDiff, Math.abs(dk[i]! * k.scale - dp[i]! * p.scale));
      expect(maxDiff, k.target.module).toBeLessThanOrEqual(1e-6);
    }
  });
});

describe('golden merge export', () => {
  it('redline merge writes a CompVis single file with the golden key set whose fused weights match the reference', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'redline-merge-'));
    try {
      const out = join(dir, 'merged.safetensors');
      const scaleKey = mergedKeys[0]!;
      const scale = Number(/^merged_weight_scale([0-9.]+)\./.exec(scaleKey)![1]);
      const report = await mergeToFile({ model: goldenPath('models', 'diffusers'), loras: [{ path: goldenPath('lora', 'lora_kohya.safetensors'), unet: scale, te: scale }], out, format: 'single-file' });
      expect(report.fusedWeights).toBe(manifest.files['lora/lora_peft.safetensors']!.n_unet_modules! + manifest.files['lora/lora_peft.safetensors']!.n_te_modules!);
      const keysOriginal = goldenJson<Record<string, number[]>>('models', 'keys_original.json');
      const written = SafetensorsFile.open(out);
      try {
        expect(new Set(written.keys())).toEqual(new Set(Object.keys(keysOriginal)));
        for (const [k, shape] of Object.entries(keysOriginal)) expect(written.info(k).shape, k).toEqual(shape);
      } finally {
        written.close();
      }
      const reloaded = openCheckpoint(out, { configs: goldenPath('models', 'diffusers') });
      try {
        for (const key of mergedKeys.filter((k) => k.startsWith(`merged_weight_scale${scale}.`))) {
          const { component, weight } = locate(key.replace(/^merged_weight_scale[0-9.]+\./, ''));
          expect(maxAbs(reloaded.components[component].get(weight).toFloat32(), goldens.getFloat32(key)), key).toBeLessThanOrEqual(ATOL);
        }
        // Weights no adapter touches are copied bit for bit.
        for (const w of ['conv_in.weight', 'down_blocks.0.resnets.0.conv1.weight', 'mid_block.attentions.0.norm.weight']) {
          expect(maxAbs(reloaded.components.unet.get(w).toFloat32(), model.components.unet.get(w).toFloat32()), w).toBe(0);
        }
        expect(maxAbs(reloaded.components.vae.get('decoder.mid_block.attentions.0.to_q.weight').toFloat32(), model.components.vae.get('decoder.mid_block.attentions.0.to_q.weight').toFloat32())).toBe(0);
      } finally {
        reloaded.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function maxAbs(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
