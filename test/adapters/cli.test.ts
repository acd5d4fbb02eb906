// `redline loras`, `redline merge` and `redline models` end to end through the real CLI.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { mergeToFile } from '../../src/adapters/merge.ts';
import { openCheckpoint, writeDiffusersFolder, writeSingleFile } from '../../src/models/checkpoint/index.ts';
import { writeSafetensors } from '../../src/tensor/safetensors.ts';
import { repoRoot } from '../helpers/golden.ts';
import { tinyConfigs, tinySources } from '../checkpoint/fixtures.ts';
import { maxAbsDiff, randn, refMatmul, rng } from './helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'redline-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const cli = (...args: string[]) =>
  spawnSync(process.execPath, [join(repoRoot, 'bin', 'redline.js'), ...args], { encoding: 'utf8', env: { ...process.env, REDLINE_CACHE_DIR: join(dir, 'cache') } });

const configs = tinyConfigs();
const sources = tinySources(configs);
const models = join(dir, 'models');
const folder = join(models, 'tiny-diffusers');
writeDiffusersFolder(folder, sources, configs);
const single = join(models, 'tiny.safetensors');
writeSingleFile(single, sources, configs);
const loras = join(dir, 'loras');
const r = rng(5);
const MOD = 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q';
const down = randn([2, 8], r);
const up = randn([8, 2], r);
const fx = join(loras, 'fx.safetensors');
mkdirSync(loras);
writeSafetensors(fx, { [`lora_unet_${MOD.replace(/\./g, '_')}.lora_down.weight`]: down, [`lora_unet_${MOD.replace(/\./g, '_')}.lora_up.weight`]: up }, {
  ss_network_dim: '2',
  ss_tag_frequency: JSON.stringify({ a: { '\u001b]0;pwned\u0007title': 3 } }),
});

describe('redline CLI', () => {
  it('loras --json lists the adapter with sanitised tags and its A1111 hash', () => {
    const res = cli('loras', loras, '--json');
    expect(res.status, res.stderr).toBe(0);
    const list = JSON.parse(res.stdout) as Array<{ file: string; meta: { rank: number; topTags: Array<{ tag: string }> }; hashes: { a1111: string } }>;
    expect(list).toHaveLength(1);
    expect(list[0]!.meta.rank).toBe(2);
    expect(list[0]!.meta.topTags[0]!.tag).toBe(']0;pwnedtitle');
    expect(list[0]!.hashes.a1111).toMatch(/^[0-9a-f]{12}$/);
    const text = cli('loras', loras);
    expect(text.stdout).not.toMatch(/[\u0000-\u0008\u001b]/);
  });

  it('models lists the folder and the single file as SD 1.x with a 10-digit hash', () => {
    const res = cli('models', models, '--json');
    expect(res.status, res.stderr).toBe(0);
    const list = JSON.parse(res.stdout) as Array<{ path: string; format: string; family: string; hash: { short: string } | null; usable: boolean }>;
    expect(list.map((m) => [m.path, m.format, m.family, m.usable])).toEqual([
      ['tiny-diffusers', 'diffusers', 'sd1', true],
      ['tiny.safetensors', 'single-file', 'sd1', true],
    ]);
    expect(list[1]!.hash!.short).toMatch(/^[0-9a-f]{10}$/);
  });

  it('merge writes a single file whose fused weight is W + s * up @ down; no silent overwrite', () => {
    const out = join(dir, 'merged.safetensors');
    const res = cli('merge', '--model', folder, '--lora', `${fx}:0.5:0`, '--out', out);
    expect(res.status, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/fx: applied 2 of 2 keys to 1 modules \(unet 0\.5, te 0\)/);
    const ck = openCheckpoint(out, { configs: folder });
    const want = sources.unet.get(`${MOD}.weight`).toFloat32().map((v, i) => v + 0.5 * refMatmul(up.toFloat32(), 8, 2, down.toFloat32(), 8)[i]!);
    expect(maxAbsDiff(ck.components.unet.get(`${MOD}.weight`).toFloat32(), want)).toBeLessThan(1e-6);
    ck.close();
    const again = cli('merge', '--model', folder, '--lora', fx, '--out', out);
    expect(again.status).toBe(1);
    expect(again.stderr).toMatch(/already exists.*--force/);
  });

  it('merge from a single file with non-SD1.5 group counts asks for --config', () => {
    const res = cli('merge', '--model', single, '--lora', fx, '--out', join(dir, 'x.safetensors'));
    expect(res.status).toBe(1);
    expect(res.stderr).toMatch(/norm_num_groups 32.*--config DIR/);
  });
});

describe('mergeToFile as a diffusers folder', () => {
  it('writes a folder that reloads with the fused weight and the untouched ones bit-exact', async () => {
    const out = join(dir, 'merged-folder');
    const report = await mergeToFile({ model: single, configs: folder, loras: [{ path: fx, unet: 1, te: 1 }], out, format: 'diffusers' });
    expect(report.fusedWeights).toBe(1);
    const ck = openCheckpoint(out);
    const delta = refMatmul(up.toFloat32(), 8, 2, down.toFloat32(), 8);
    const want = sources.unet.get(`${MOD}.weight`).toFloat32().map((v, i) => v + delta[i]!);
    expect(maxAbsDiff(ck.components.unet.get(`${MOD}.weight`).toFloat32(), want)).toBeLessThan(1e-6);
    expect(maxAbsDiff(ck.components.vae.get('decoder.conv_out.weight').toFloat32(), sources.vae.get('decoder.conv_out.weight').toFloat32())).toBe(0);
    expect(ck.tokenizerDir).toBeNull(); // a single-file base has no tokenizer to copy
    ck.close();
  });
});
