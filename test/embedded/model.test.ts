// The shipped embedded model (models/redline-tiny): its files are what the recipe says
// (diffusers layout, fp16, under 40 MB), it loads and generates through the normal
// pipeline. (Caption accuracy is measured by npm run eval:demo; see docs/embedded-model.md.)
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Generator } from '../../src/pipeline/generate.ts';
import { StableDiffusionModel } from '../../src/pipeline/model.ts';
import { SafetensorsFile } from '../../src/tensor/safetensors.ts';

const MODEL = 'models/redline-tiny';
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
});
