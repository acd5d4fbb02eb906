// `redline train` as a user runs it: a bad dataset gives a RedlineError naming the files
// (no stack trace), and fine_tune mode writes a diffusers folder whose UNet moved and whose
// other components are the base's.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { afterAll, describe, expect, it } from 'vitest';
import { openCheckpoint } from '../../../src/models/checkpoint/index.ts';
import { writeSceneDataset } from '../../../src/train/procedural/dataset.ts';
import { goldenPath, repoRoot } from '../../helpers/golden.ts';

const run = promisify(execFile);
const cli = join(repoRoot, 'bin', 'redline.js');
const root = mkdtempSync(join(tmpdir(), 'redline-train-cli-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function config(name: string, extra: string, imageDir: string): string {
  const p = join(root, `${name}.toml`);
  writeFileSync(p, `[training]\npretrained_model = "${goldenPath('models', 'diffusers')}"\noutput_dir = "${name}-out"\noutput_name = "${name}"\nseed = 5\n${extra}\n[general]\nresolution = 64\nbatch_size = 2\n[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "${imageDir}"\n`);
  return p;
}

describe('redline train', () => {
  it('refuses a bad dataset with a message naming the files', async () => {
    const dir = join(root, 'bad');
    mkdirSync(dir);
    const px = Buffer.alloc(64 * 64 * 4, 200);
    await sharp(px, { raw: { width: 64, height: 64, channels: 4 } }).png().toFile(join(dir, 'alpha.png'));
    writeFileSync(join(dir, 'alpha.txt'), 'a square');
    await sharp(px.subarray(0, 64 * 64 * 3), { raw: { width: 64, height: 64, channels: 3 } }).png().toFile(join(dir, 'nocaption.png'));
    const err = await run(process.execPath, [cli, 'train', config('bad', 'max_train_steps = 2', 'bad')]).then(() => null, (e: { code: number; stderr: string }) => e);
    expect(err).not.toBeNull();
    expect(err!.code).not.toBe(0);
    expect(err!.stderr).toMatch(/have no caption file: .*nocaption\.png/);
    expect(err!.stderr).toMatch(/channel mode other than RGB \(1 RGBA\)/);
    expect(err!.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });

  it('fine_tune mode writes a diffusers folder with a trained UNet', async () => {
    await writeSceneDataset(join(root, 'scenes'), { count: 4, seed: 2, size: 64 });
    const { stdout } = await run(process.execPath, [cli, 'train', config('ft', 'mode = "fine_tune"\nlearning_rate = 1e-4\nmax_train_steps = 3', 'scenes'), '--json'], { timeout: 300_000 });
    const summary = JSON.parse(stdout) as { output: string; steps: number; finalLoss: number };
    expect(summary.steps).toBe(3);
    expect(Number.isFinite(summary.finalLoss)).toBe(true);
    const base = openCheckpoint(goldenPath('models', 'diffusers'));
    const tuned = openCheckpoint(summary.output);
    try {
      const w = 'conv_in.weight';
      const a = base.components.unet.get(w).toFloat32();
      const b = tuned.components.unet.get(w).toFloat32();
      expect(b.some((v, i) => v !== a[i])).toBe(true);
      for (const name of ['decoder.conv_in.weight']) expect(tuned.components.vae.get(name).toFloat32()).toEqual(base.components.vae.get(name).toFloat32());
      expect(tuned.components.text_encoder.get('text_model.final_layer_norm.weight').toFloat32()).toEqual(base.components.text_encoder.get('text_model.final_layer_norm.weight').toFloat32());
    } finally {
      base.close();
      tuned.close();
    }
  }, 300_000);
});
