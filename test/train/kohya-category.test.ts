// An adapter trained with a graded category declares it in its own metadata
// (redline.category), so a copy that lost its sidecar NAME.json is refused instead of
// running ungraded. The shipped splatter demo adapter carries the key too: its header was
// rewritten with the tensor bytes left as trained, which kohya's own sshs_model_hash (the
// sha256 of the tensor bytes, written at training time) proves.
import { createHash } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CATEGORY_METADATA_KEY, readSidecar } from '../../src/adapters/registry.ts';
import { computeFileHashes } from '../../src/models/checkpoint/hash.ts';
import { readSafetensors, SafetensorsFile } from '../../src/tensor/safetensors.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import { loadTrainConfig, parseTrainConfig } from '../../src/train/data/config.ts';
import { saveKohyaLora } from '../../src/train/run/kohya.ts';
import { repoRoot } from '../helpers/golden.ts';
import { refusalOf } from '../helpers/errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'redline-kohya-category-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const MOD = 'lora_unet_mid_block_attentions_0_proj_in';
const tensors = new Map([
  [`${MOD}.lora_down.weight`, new Tensor('f32', [2, 8], Float32Array.from({ length: 16 }, (_, i) => i / 8))],
  [`${MOD}.lora_up.weight`, new Tensor('f32', [8, 2], Float32Array.from({ length: 16 }, (_, i) => -i / 8))],
  [`${MOD}.alpha`, new Tensor('f32', [], Float32Array.of(2))],
]);
const ss = { ss_network_dim: '2', ss_network_alpha: '2', ss_output_name: 'x' };

const metadataOf = (path: string): Record<string, string> => {
  const f = SafetensorsFile.open(path);
  try {
    return { ...f.metadata };
  } finally {
    f.close();
  }
};

/** sha256 of everything after the header: the tensor bytes. */
function tensorBytesSha256(path: string): string {
  const b = readFileSync(path);
  return createHash('sha256').update(b.subarray(8 + Number(b.readBigUInt64LE(0)))).digest('hex');
}


describe('saveKohyaLora and the category', () => {
  it('writes redline.category when the run declares one, and the sshs_* hashes stay the ss_*-only ones kohya computes', async () => {
    const plain = join(dir, 'plain.safetensors');
    const graded = join(dir, 'graded.safetensors');
    const a = await saveKohyaLora(plain, tensors, ss);
    const b = await saveKohyaLora(graded, tensors, ss, { category: 'graphic-injury' });
    expect(metadataOf(plain)[CATEGORY_METADATA_KEY]).toBeUndefined();
    expect(metadataOf(graded)[CATEGORY_METADATA_KEY]).toBe('graphic-injury');
    // the category is not part of kohya's hashed metadata: same tensors, same ss_* keys, same hashes
    expect(b).toEqual(a);
    expect(metadataOf(graded)).toMatchObject({ sshs_model_hash: a.modelHash, sshs_legacy_hash: a.legacyHash });
    expect((await computeFileHashes(graded)).addnet).toBe(a.modelHash);
  });

  it('a graded adapter copied without its sidecar is refused; with it, it is graded', async () => {
    const path = join(dir, 'copied.safetensors');
    await saveKohyaLora(path, tensors, ss, { category: 'graphic-injury' });
    const err = refusalOf(() => readSidecar(path));
    expect(err.code).toBe('adapter_sidecar_missing');
    expect(err.message).toMatch(/declares the category "graphic-injury" but it has no sidecar copied\.json/);
  });

  it('refuses to write a category the registry would refuse', async () => {
    await expect(saveKohyaLora(join(dir, 'u.safetensors'), tensors, ss, { category: 'vfx-gore' })).rejects.toThrow(/not a category Redline knows \(known: graphic-injury\)/);
    await expect(saveKohyaLora(join(dir, 'h.safetensors'), tensors, ss, { category: 'sexual-minors' })).rejects.toThrow(/hard-blocked category minors-sexual/);
  });
});

describe('the training config', () => {
  const config = (category: string) => () => parseTrainConfig(`[training]\npretrained_model = "model"\noutput_dir = "out"\ncategory = "${category}"\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "imgs"\n`, join(dir, 'train.toml'));

  it('refuses an unknown or hard-blocked category when it loads, not after training', () => {
    expect(config('vfx-gore')).toThrow(/train\.toml: \[training\]: category "vfx-gore" is not a category Redline knows \(known: graphic-injury\)/);
    expect(config('sexual-minors')).toThrow(/hard-blocked category minors-sexual/);
    expect(config('Graphic Injury')).toThrow(/category must be 1-40 lower-case letters/);
  });
});

describe('the shipped splatter demo adapter', () => {
  const lora = join(repoRoot, 'models', 'Lora', 'splatter.safetensors');
  const sidecar = JSON.parse(readFileSync(join(repoRoot, 'models', 'Lora', 'splatter.json'), 'utf8')) as { category: string };
  const recipe = loadTrainConfig(join(repoRoot, 'recipes', 'splatter', 'splatter.toml'));

  it('declares the category of its recipe and of its sidecar', () => {
    expect(recipe.category).toBe('graphic-injury');
    expect(sidecar.category).toBe(recipe.category);
    expect(metadataOf(lora)[CATEGORY_METADATA_KEY]).toBe(recipe.category);
    expect(readSidecar(lora).sidecar).toEqual(sidecar);
  });

  it('holds the tensor bytes it was trained with: their sha256 is the sshs_model_hash kohya wrote at training time', () => {
    const meta = metadataOf(lora);
    expect(meta.sshs_model_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(tensorBytesSha256(lora)).toBe(meta.sshs_model_hash);
    // and every tensor reads back whole from its own offsets
    for (const [name, t] of readSafetensors(lora)) expect(t.toFloat32().every(Number.isFinite), name).toBe(true);
  });

  it('copied without splatter.json, it is refused rather than run ungraded', () => {
    const copy = join(dir, 'splatter.safetensors');
    copyFileSync(lora, copy);
    expect(refusalOf(() => readSidecar(copy)).code).toBe('adapter_sidecar_missing');
  });
});
