// The shipped embedded model (models/redline-tiny): its files are what the recipe says
// (diffusers layout, fp16, under 40 MB), it loads and generates through the normal
// pipeline, it follows held-out captions far above chance, and its splatter demo adapter at
// the calibrated strengths adds more paint at each intensity level. (The full evaluation is
// npm run eval:demo; see docs/embedded-model.md.)
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSidecar } from '../../src/adapters/registry.ts';
import { Generator } from '../../src/pipeline/generate.ts';
import { StableDiffusionModel } from '../../src/pipeline/model.ts';
import { SafetensorsFile } from '../../src/tensor/safetensors.ts';
import { COLOR_NAMES } from '../../src/train/procedural/palette.ts';
import { analyzeScene, captionOf } from '../../src/train/procedural/scenes.ts';
import { heldOutScenes, readRecipe } from '../../scripts/embedded-recipe.ts';

const MODEL = 'models/redline-tiny';
const ADAPTER = 'models/Lora/splatter.safetensors';
const SIZE = 128;

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(join(dir, e.name)) : [join(dir, e.name)]));
}

describe('embedded model files', () => {
  it('is a diffusers folder of fp16 safetensors under 40 MB', () => {
    const index = JSON.parse(readFileSync(join(MODEL, 'model_index.json'), 'utf8')) as Record<string, unknown>;
    expect(index.unet).toEqual(['diffusers', 'UNet2DConditionModel']);
    expect(index.vae).toEqual(['diffusers', 'AutoencoderKL']);
    expect(index.text_encoder).toEqual(['transformers', 'CLIPTextModel']);
    const weights = filesUnder(MODEL).filter((f) => f.endsWith('.safetensors') && !f.includes('loras'));
    expect(weights.map((f) => f.slice(MODEL.length + 1)).sort()).toEqual(['text_encoder/model.safetensors', 'unet/diffusion_pytorch_model.safetensors', 'vae/diffusion_pytorch_model.safetensors']);
    let bytes = 0;
    for (const f of weights) {
      bytes += statSync(f).size;
      const st = SafetensorsFile.open(f);
      for (const k of st.keys()) expect(st.info(k).dtype, `${f}:${k}`).toBe('f16');
      st.close();
    }
    expect(bytes).toBeLessThan(40 * 1024 * 1024);
  });
});

describe('embedded model generation', () => {
  let model: StableDiffusionModel;
  const held = heldOutScenes(readRecipe('recipes/redline-tiny').recipe);
  beforeAll(async () => {
    model = await StableDiffusionModel.load(MODEL);
  }, 120_000);
  afterAll(async () => {
    await model?.release();
  });

  it('generates a seeded 128x128 image, the same twice', async () => {
    const req = { prompt: 'a large red circle in the center, blue background', seed: 7, steps: 8, width: SIZE, height: SIZE };
    const [a] = await new Generator(model).generate(req);
    const [b] = await new Generator(model).generate(req);
    expect([a!.image.width, a!.image.height]).toEqual([SIZE, SIZE]);
    expect(Buffer.from(a!.image.data).equals(Buffer.from(b!.image.data))).toBe(true);
    const d = a!.image.data;
    let mean = 0;
    for (const v of d) mean += v / d.length;
    let variance = 0;
    for (const v of d) variance += (v - mean) ** 2 / d.length;
    expect(Math.sqrt(variance)).toBeGreaterThan(10); // an image, not a flat field
  }, 120_000);

  it('draws the object in the colour a held-out caption names, far above chance', async () => {
    const scenes = held.slice(0, 12);
    let right = 0;
    for (const [i, spec] of scenes.entries()) {
      const [img] = await new Generator(model).generate({ prompt: captionOf(spec), seed: 1000 + i, steps: 20, cfgScale: 7, sampler: 'Euler a', width: SIZE, height: SIZE });
      if (analyzeScene(img!.image.data, SIZE, SIZE).color === spec.color) right++;
    }
    const chance = 1 / COLOR_NAMES.filter((c) => c !== 'brown' && c !== 'gray').length;
    expect(right / scenes.length).toBeGreaterThanOrEqual(Math.max(0.6, 5 * chance));
  }, 300_000);

  it('adds more splatter at each intensity level with the demo adapter at its calibrated strengths', async () => {
    const { sidecar } = readSidecar(ADAPTER);
    expect(sidecar?.category).toBe('graphic-injury');
    const coverage: number[] = [];
    for (let level = 0; level <= 3; level++) {
      const strength = sidecar!.intensity![String(level)] ?? 0;
      let sum = 0;
      for (let i = 0; i < 4; i++) {
        const adapters = strength > 0 ? [{ path: ADAPTER, te: strength, unet: strength }] : [];
        const [img] = await new Generator(model).generate({ prompt: captionOf(held[i]!), seed: 2000 + i, steps: 20, sampler: 'Euler a', width: SIZE, height: SIZE, adapters });
        sum += analyzeScene(img!.image.data, SIZE, SIZE).splatterCoverage / 4;
      }
      coverage.push(sum);
    }
    for (let level = 1; level <= 3; level++) expect(coverage[level], `coverage at level ${level} vs ${level - 1}: ${coverage.join(', ')}`).toBeGreaterThan(coverage[level - 1]!);
    expect(coverage[3]! - coverage[0]!).toBeGreaterThan(0.02);
  }, 300_000);
});
