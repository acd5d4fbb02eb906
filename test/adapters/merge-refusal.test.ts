// `redline merge` must not bake a graded adapter into a checkpoint: the merged model would
// carry the adapter's effect at the merge strength in every image, declare no category, and
// so escape the intensity caps the policy applies to the adapter at run time. Adapters that
// declare no category merge as before.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { assertMergeable, mergeToFile } from '../../src/adapters/merge.ts';
import { CATEGORY_METADATA_KEY } from '../../src/adapters/registry.ts';
import { RedlineError } from '../../src/errors.ts';
import { openCheckpoint, writeDiffusersFolder } from '../../src/models/checkpoint/index.ts';
import { readSafetensors } from '../../src/tensor/safetensors.ts';
import { repoRoot } from '../helpers/golden.ts';
import { tinyConfigs, tinySources } from '../checkpoint/fixtures.ts';
import { maxAbsDiff, refMatmul } from './helpers.ts';
import { BROKEN_SIDECARS, VALID_GRADED_SIDECAR, writeAdapter, writeTinyLora } from './sidecar-fixtures.ts';

const dir = mkdtempSync(join(tmpdir(), 'redline-merge-refusal-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const cli = (...args: string[]) =>
  spawnSync(process.execPath, [join(repoRoot, 'bin', 'redline.js'), ...args], { encoding: 'utf8', env: { ...process.env, REDLINE_CACHE_DIR: join(dir, 'cache') } });

const configs = tinyConfigs();
const sources = tinySources(configs);
const base = join(dir, 'base');
writeDiffusersFolder(base, sources, configs);
const loras = join(dir, 'loras');
mkdirSync(loras);
const lora = (name: string, sidecar?: unknown, metadata: Record<string, string> = {}): string => writeAdapter(loras, name, sidecar, metadata);
const plain = lora('plain');
const noted = lora('noted', { notes: 'a texture adapter' });
const graded = lora('graded', VALID_GRADED_SIDECAR);
const declared = lora('declared', undefined, { [CATEGORY_METADATA_KEY]: 'graphic-injury' });
const declaredWithSidecar = lora('both', VALID_GRADED_SIDECAR, { [CATEGORY_METADATA_KEY]: 'graphic-injury' });
const unknown = lora('vfxgore', { category: 'vfx-gore', intensity: VALID_GRADED_SIDECAR.intensity });
const hard = lora('hard', { category: 'sexual-minors' });
const truncated = join(loras, 'truncated.safetensors');
writeTinyLora(truncated);
BROKEN_SIDECARS.find((c) => c.name === 'truncated')!.write(join(loras, 'truncated.json'));

const MOD = 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q';
const KOHYA = 'lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q';

async function mergeRefusal(paths: string[], out: string): Promise<RedlineError> {
  const err = await mergeToFile({ model: base, loras: paths.map((path) => ({ path, unet: 0.3, te: 0.3 })), out, format: 'single-file' }).then(() => null, (e: unknown) => e);
  if (!(err instanceof RedlineError)) throw new Error(`expected a RedlineError, got ${String(err)}`);
  return err;
}

describe('mergeToFile and graded adapters', () => {
  it('refuses an adapter whose sidecar declares graphic-injury, saying why and what to do, and writes nothing', async () => {
    const out = join(dir, 'graded.safetensors');
    const err = await mergeRefusal([graded], out);
    expect(err.code).toBe('adapter_graded_merge');
    expect(err.message).toMatch(/^Adapter "graded" is not merged: its sidecar graded\.json declares the category "graphic-injury", which the safety policy grades\./);
    expect(err.message).toMatch(/no intensity level, cap or safety guidance would apply/);
    expect(err.hint).toMatch(/<lora:graded:1> in the prompt/);
    expect(err.message + err.hint!).not.toContain(dir);
    expect(existsSync(out)).toBe(false);
  });

  it('refuses an adapter whose metadata declares the category, with or without its sidecar, as a merge refusal', async () => {
    for (const path of [declared, declaredWithSidecar]) {
      const err = await mergeRefusal([path], join(dir, 'declared.safetensors'));
      expect(err.code).toBe('adapter_graded_merge');
      expect(err.message).toMatch(/its metadata \(redline\.category\) declares the category "graphic-injury"/);
    }
  });

  it('refuses the whole merge when one adapter of several is graded, before any output exists', async () => {
    const out = join(dir, 'mixed.safetensors');
    expect((await mergeRefusal([plain, graded], out)).code).toBe('adapter_graded_merge');
    expect(existsSync(out)).toBe(false);
  });

  it('refuses adapters the registry refuses: a broken sidecar, an unknown or a hard-blocked category', async () => {
    expect((await mergeRefusal([truncated], join(dir, 't.safetensors'))).code).toBe('adapter_sidecar_invalid');
    expect((await mergeRefusal([unknown], join(dir, 'u.safetensors'))).code).toBe('adapter_category_unknown');
    expect((await mergeRefusal([hard], join(dir, 'h.safetensors'))).code).toBe('adapter_category_hard_blocked');
  });

  it('merges adapters that declare no category as before: W + s * up @ down', async () => {
    expect(() => assertMergeable(plain)).not.toThrow();
    expect(() => assertMergeable(noted)).not.toThrow();
    const out = join(dir, 'plain-merged.safetensors');
    const report = await mergeToFile({ model: base, loras: [{ path: noted, unet: 0.5, te: 0.5 }], out, format: 'single-file' });
    expect(report.fusedWeights).toBe(1);
    const t = readSafetensors(noted);
    const delta = refMatmul(t.get(`${KOHYA}.lora_up.weight`)!.toFloat32(), 8, 2, t.get(`${KOHYA}.lora_down.weight`)!.toFloat32(), 8);
    const want = sources.unet.get(`${MOD}.weight`).toFloat32().map((v, i) => v + 0.5 * delta[i]!);
    const ck = openCheckpoint(out, { configs: base });
    try {
      expect(maxAbsDiff(ck.components.unet.get(`${MOD}.weight`).toFloat32(), want)).toBeLessThan(1e-6);
    } finally {
      ck.close();
    }
  });
});

describe('redline merge', () => {
  it('exits 1 with the refusal and its hint (no stack trace) for --out and for --onnx, writing neither', () => {
    const out = join(dir, 'cli.safetensors');
    const onnx = join(dir, 'cli-onnx');
    for (const target of [['--out', out], ['--onnx', onnx]]) {
      const res = cli('merge', '--model', base, '--lora', `${plain}:0.5`, '--lora', `${graded}:0.2`, ...target);
      expect(res.status, res.stderr).toBe(1);
      expect(res.stderr).toMatch(/Adapter "graded" is not merged: its sidecar graded\.json declares the category "graphic-injury"/);
      expect(res.stderr).toMatch(/<lora:graded:1>/);
      expect(res.stderr).not.toMatch(/\n\s+at /);
    }
    expect(existsSync(out)).toBe(false);
    expect(existsSync(onnx)).toBe(false);
  });

  it('--help says graded adapters are refused and how to use them instead', () => {
    const res = cli('merge', '--help');
    expect(res.stdout).toMatch(/declare a category[\s\S]*are refused[\s\S]*<lora:NAME:1>/);
  });
});
