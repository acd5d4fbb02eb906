// `redline generate` with A1111's hires fix, as a user runs it (a child process on the
// embedded model): a 64 px first pass, a 128 px PNG, the hires infotext fields.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { parseInfotext } from '../../src/pipeline/infotext.ts';
import { readText } from '../../src/safety/provenance/png.ts';
import { repoRoot } from '../helpers/golden.ts';

const run = promisify(execFile);
const cli = join(repoRoot, 'bin', 'redline.js');
const dataDir = mkdtempSync(join(tmpdir(), 'redline-cli-hires-'));
const env = { ...process.env, REDLINE_DATA_DIR: dataDir };

async function fail(args: string[]): Promise<string> {
  try {
    await run(process.execPath, [cli, 'generate', ...args], { env });
  } catch (err) {
    return (err as { stderr: string }).stderr;
  }
  throw new Error('expected the command to fail');
}

describe('redline generate --hires-*', () => {
  it('writes the second pass\'s image with A1111\'s hires infotext', async () => {
    const out = join(dataDir, 'hires.png');
    const { stdout } = await run(process.execPath, [
      cli, 'generate', '--prompt', 'a red circle on a white background', '--sampler', 'Euler', '--steps', '3', '--cfg', '7',
      '--seed', '11', '--rng', 'cpu', '--width', '64', '--height', '64',
      '--hires-scale', '2', '--hires-upscaler', 'latent (bicubic)', '--hires-steps', '2', '--denoise', '0.55',
      '--out', out, '--json',
    ], { env });
    const result = JSON.parse(stdout) as { images: Array<{ path: string; seed: number }> };
    expect(result.images).toHaveLength(1);
    const png = readFileSync(out);
    const meta = await sharp(png).metadata();
    expect([meta.width, meta.height]).toEqual([128, 128]);
    const text = readText(png, 'parameters')!;
    // Size is the first pass's, as A1111 writes it; the hires fields follow in init() order.
    expect(text).toMatch(/, Size: 64x64, .*Denoising strength: 0\.55, .*Hires upscale: 2, Hires steps: 2, Hires upscaler: Latent \(bicubic\)(, |$)/);
    expect(parseInfotext(text).params).toMatchObject({ 'Size-1': '64', 'Size-2': '64', 'Hires upscale': '2', 'Hires steps': '2', 'Hires upscaler': 'Latent (bicubic)' });
  }, 120_000);

  it('--hires-prompt, --hires-negative, --hires-sampler and --pad-cond-uncond: the infotext as A1111 writes them', async () => {
    const out = join(dataDir, 'hires-prompt.png');
    // Over 75 tokens: two chunks against the negative prompt's one, so the second pass pads.
    const long = Array.from({ length: 40 }, () => 'red circle').join(', ');
    await run(process.execPath, [
      cli, 'generate', '--prompt', 'a red circle on a white background', '--negative', 'blurry', '--sampler', 'Euler', '--steps', '2',
      '--seed', '11', '--rng', 'cpu', '--width', '64', '--height', '64', '--hires-steps', '1', '--denoise', '0.5',
      '--hires-prompt', long, '--hires-negative', 'fog', '--hires-sampler', 'DPM++ 2M Karras', '--pad-cond-uncond', '--out', out, '--json',
    ], { env });
    const text = readText(readFileSync(out), 'parameters')!;
    expect(text).toMatch(new RegExp(`, Denoising strength: 0\\.5, RNG: CPU, Hires sampler: DPM\\+\\+ 2M, Hires prompt: "${long}", Hires negative prompt: fog, Hires schedule type: Karras, Hires upscale: 2, Hires steps: 1, Pad conds: True(, |$)`));
  }, 120_000);

  it('refuses bad hires options with a clear message', async () => {
    const base = ['--prompt', 'x', '--width', '64', '--height', '64'];
    expect(await fail([...base, '--hires-upscaler', '4x-UltraSharp'])).toMatch(/Unknown hires upscaler "4x-UltraSharp"[\s\S]*Latent \(nearest-exact\)/);
    expect(await fail([...base, '--hires-scale', '1.3'])).toMatch(/83x83, which is not a multiple of 8/);
    expect(await fail([...base, '--hires-resize', 'big'])).toMatch(/--hires-resize must be WxH/);
    expect(await fail([...base, '--hires', '--strength', '0.5', '--denoise', '0.6'])).toMatch(/same option/);
    expect(await fail([...base, '--hires-sampler', 'Heun'])).toMatch(/Hires sampler: Unknown sampler "Heun"[\s\S]*DPM\+\+ 2M Karras/);
    expect(await fail(['--prompt', 'x <lora:splatter:0.5>', '--width', '64', '--height', '64', '--hires-prompt', 'x'])).toMatch(/hires prompts name other LoRAs[\s\S]*same <lora:\.\.\.> tags/);
    // The policy screens the hires prompt alone, and joined to the prompt: the final image carries both passes.
    expect(await fail([...base, '--hires-prompt', 'a ch1ld covered in bl00d'])).toMatch(/never produces \(minors in any graded/);
    expect(await fail(['--prompt', 'a child at a birthday party', '--width', '64', '--height', '64', '--hires-prompt', 'covered in blood, deep wounds'])).toMatch(/never produces \(minors in any graded/);
  }, 60_000);
});
