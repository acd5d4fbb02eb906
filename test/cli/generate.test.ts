// `redline generate` end to end, as a user runs it: a child process on the golden model,
// checked against diffusers' image for the same seed, prompt and sampler.
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { parseInfotext } from '../../src/pipeline/infotext.ts';
import { readText } from '../../src/safety/provenance/png.ts';
import { SafetensorsFile } from '../../src/tensor/safetensors.ts';
import { goldenJson, goldenPath, repoRoot } from '../helpers/golden.ts';

const run = promisify(execFile);
const cli = join(repoRoot, 'bin', 'redline.js');
const dataDir = mkdtempSync(join(tmpdir(), 'redline-cli-'));
const env = { ...process.env, REDLINE_DATA_DIR: dataDir };

interface Case { call: Record<string, unknown> }

describe('redline generate', () => {
  it('writes the PNG diffusers would, with A1111 infotext', async () => {
    const ddim = goldenJson<Record<string, Case>>('pipelines', 'pipelines.json').txt2img_ddim!.call;
    const latentsFile = SafetensorsFile.open(goldenPath('pipelines', String(ddim.latents)));
    const seed = Number(/manual_seed\((\d+)\)/.exec(latentsFile.metadata.description ?? '')![1]);
    latentsFile.close();
    const out = join(dataDir, 'out.png');
    const { stdout } = await run(process.execPath, [
      cli, 'generate', '--model', goldenPath('models', 'diffusers'),
      '--prompt', String(ddim.prompt), '--negative', String(ddim.negative_prompt),
      '--sampler', 'DDIM', '--steps', String(ddim.num_inference_steps), '--cfg', String(ddim.guidance_scale),
      '--seed', String(seed), '--rng', 'cpu', '--width', String(ddim.width), '--height', String(ddim.height),
      '--out', out, '--json',
    ], { env });
    const result = JSON.parse(stdout) as { images: Array<{ path: string; seed: number }> };
    expect(result.images).toHaveLength(1);
    expect(result.images[0]!.seed).toBe(seed);

    const png = readFileSync(out);
    const info = parseInfotext(readText(png, 'parameters')!);
    expect(info.prompt).toBe(ddim.prompt);
    expect(info.negativePrompt).toBe(ddim.negative_prompt);
    expect(info.params).toMatchObject({
      Steps: String(ddim.num_inference_steps),
      Sampler: 'DDIM',
      'CFG scale': String(ddim.guidance_scale),
      Seed: String(seed),
      'Size-1': String(ddim.width),
      'Size-2': String(ddim.height),
      Model: 'diffusers',
      RNG: 'CPU',
    });

    // pixels: diffusers' float image, rounded to 8 bits
    const golden = SafetensorsFile.open(goldenPath('pipelines', 'txt2img_ddim.safetensors'));
    const image = golden.getFloat32('image');
    const { data, info: meta } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    const plane = meta.width * meta.height;
    let worst = 0;
    for (let c = 0; c < 3; c++) {
      for (let i = 0; i < plane; i++) worst = Math.max(worst, Math.abs(data[i * meta.channels + c]! - image[c * plane + i]! * 255));
    }
    expect(worst).toBeLessThanOrEqual(0.51);
  });

  it('refuses bad input with a clear message and no stack trace', async () => {
    const fail = async (args: string[]): Promise<string> => {
      try {
        await run(process.execPath, [cli, 'generate', ...args], { env });
      } catch (err) {
        return (err as { stderr: string }).stderr;
      }
      throw new Error('expected the command to fail');
    };
    const model = goldenPath('models', 'diffusers');
    expect(await fail(['--model', model, '--prompt', 'x', '--sampler', 'Heun++'])).toMatch(/Unknown sampler|unknown sampler/i);
    expect(await fail(['--model', model, '--prompt', 'x', '--width', '100'])).toMatch(/not a multiple of 8/);
    expect(await fail(['--model', model, '--prompt', 'x', '--rng', 'tpu'])).toMatch(/rng/);
    expect(await fail(['--model', join(dataDir, 'missing.safetensors'), '--prompt', 'x'])).toMatch(/does not exist/);
    for (const msg of [await fail(['--model', model, '--prompt', 'x', '--steps', 'many'])]) {
      expect(msg).toMatch(/--steps must be a number/);
      expect(msg).not.toMatch(/\n\s+at /);
    }
  });

  it('screens the prompt with the policy before loading anything, and writes nothing when refused', async () => {
    const out = join(dataDir, 'refused.png');
    let stderr = '';
    let code = 0;
    try {
      await run(process.execPath, [cli, 'generate', '--model', goldenPath('models', 'diffusers'), '--prompt', 'a child covered in blood and gore', '--out', out], { env });
    } catch (err) {
      ({ stderr, code } = err as { stderr: string; code: number });
    }
    expect(code).toBe(1);
    expect(stderr).toMatch(/can't be generated|cannot be generated/);
    expect(existsSync(out)).toBe(false);
  });

  it('applies <lora:name:w> tags from the LoRA folder, as diffusers fuses the same adapter', async () => {
    const cases = goldenJson<Record<string, Case & { lora_scale: number }>>('pipelines', 'pipelines.json');
    const [name, c] = Object.entries(cases).find(([n]) => n.includes('lora'))!;
    const loraDir = join(dataDir, 'loras');
    mkdirSync(loraDir, { recursive: true });
    copyFileSync(goldenPath('lora', 'lora_kohya.safetensors'), join(loraDir, 'graded.safetensors'));
    const latentsFile = SafetensorsFile.open(goldenPath('pipelines', String(c.call.latents)));
    const seed = Number(/manual_seed\((\d+)\)/.exec(latentsFile.metadata.description ?? '')![1]);
    latentsFile.close();
    const out = join(dataDir, 'lora.png');
    await run(process.execPath, [
      cli, 'generate', '--model', goldenPath('models', 'diffusers'), '--lora-dir', loraDir,
      '--prompt', `${String(c.call.prompt)} <lora:graded:${c.lora_scale}>`, '--negative', String(c.call.negative_prompt),
      '--sampler', 'DDIM', '--steps', String(c.call.num_inference_steps), '--cfg', String(c.call.guidance_scale),
      '--seed', String(seed), '--rng', 'cpu', '--width', String(c.call.width), '--height', String(c.call.height), '--out', out,
    ], { env });
    const png = readFileSync(out);
    expect(readText(png, 'parameters')).toMatch(/Lora hashes: "graded: [0-9a-f]{12}"/);
    const image = SafetensorsFile.open(goldenPath('pipelines', `${name}.safetensors`)).getFloat32('image');
    const { data, info: meta } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    const plane = meta.width * meta.height;
    let worst = 0;
    for (let ch = 0; ch < 3; ch++) {
      for (let i = 0; i < plane; i++) worst = Math.max(worst, Math.abs(data[i * meta.channels + ch]! - image[ch * plane + i]! * 255));
    }
    expect(worst).toBeLessThanOrEqual(0.51);
  });
});

