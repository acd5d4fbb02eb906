// txt2img and img2img against diffusers' StableDiffusion(Img2Img)Pipeline, through the
// same Generator a user's `redline generate` runs: the seed and prompts come from
// pipelines.json, the initial noise from the CPU generator (A1111's "CPU" seed mode).
import { describe, expect, it, afterAll } from 'vitest';
import { decodeImage } from '../../src/pipeline/image.ts';
import { Generator } from '../../src/pipeline/generate.ts';
import { StableDiffusionModel } from '../../src/pipeline/model.ts';
import { SafetensorsFile } from '../../src/tensor/safetensors.ts';
import { goldenJson, goldenPath } from '../helpers/golden.ts';

interface PipelineCase {
  pipeline: string;
  scheduler?: string;
  scheduler_kwargs?: Record<string, unknown>;
  call: Record<string, unknown>;
}

const cases = goldenJson<Record<string, PipelineCase>>('pipelines', 'pipelines.json');

/** diffusers scheduler class (+ kwargs) -> the A1111 sampler name the user types. */
function samplerName(c: PipelineCase): string {
  const karras = c.scheduler_kwargs?.use_karras_sigmas === true;
  switch (c.scheduler) {
    case 'DDIMScheduler': return 'DDIM';
    case 'EulerDiscreteScheduler': return 'Euler';
    case 'EulerAncestralDiscreteScheduler': return 'Euler a';
    case 'DPMSolverMultistepScheduler': return karras ? 'DPM++ 2M Karras' : 'DPM++ 2M';
    case 'PNDMScheduler': return 'PNDM';
    case 'LMSDiscreteScheduler': return 'LMS';
    case 'UniPCMultistepScheduler': return 'UniPC';
    default: throw new Error(`golden case uses scheduler ${c.scheduler}, which this test does not map`);
  }
}

function cpuSeed(text: string, what: string): number {
  const m = /torch\.Generator\('cpu'\)\.manual_seed\((\d+)\)/.exec(text);
  if (!m) throw new Error(`${what} (${text}) does not name a seeded CPU generator`);
  return Number(m[1]);
}

/** txt2img cases pass fixed initial latents, and that file says which seed drew them;
 * img2img cases draw everything from the call's generator. */
function seedOf(c: PipelineCase): number {
  if (typeof c.call.latents === 'string') {
    const file = SafetensorsFile.open(goldenPath('pipelines', c.call.latents));
    const seed = cpuSeed(file.metadata.description ?? '', `${c.call.latents} description`);
    file.close();
    return seed;
  }
  return cpuSeed(String(c.call.generator), 'generator');
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const model = await StableDiffusionModel.load(goldenPath('models', 'diffusers'));
const generator = new Generator(model);
afterAll(() => model.release());

// LoRA cases are covered by the adapter tests; here the plain pipelines.
const plain = Object.entries(cases).filter(([name]) => !name.includes('lora'));

describe('pipelines match diffusers', () => {
  it('covers every plain txt2img and img2img golden case', () => {
    expect(plain.map(([n]) => n).sort()).toEqual(Object.keys(cases).filter((n) => !n.includes('lora')).sort());
    expect(plain.length).toBeGreaterThanOrEqual(5);
  });

  it.each(plain)('%s', async (name, c) => {
    const golden = SafetensorsFile.open(goldenPath('pipelines', `${name}.safetensors`));
    let initImage;
    if (c.pipeline === 'StableDiffusionImg2ImgPipeline') {
      // the user's path: the PNG file (the .safetensors image is the same pixels / 255)
      initImage = await decodeImage(goldenPath('pipelines', 'img2img_input.png'));
    }
    const size = initImage ? { width: initImage.width, height: initImage.height } : { width: c.call.width as number, height: c.call.height as number };
    const [out] = await generator.generate({
      prompt: c.call.prompt as string,
      negativePrompt: c.call.negative_prompt as string,
      sampler: samplerName(c),
      steps: c.call.num_inference_steps as number,
      cfgScale: c.call.guidance_scale as number,
      seed: seedOf(c),
      rng: 'cpu',
      ...size,
      ...(initImage ? { initImage, strength: c.call.strength as number } : {}),
    });
    expect(maxAbsDiff(out!.latents, golden.getFloat32('final_latents'))).toBeLessThan(1e-3);
    expect(maxAbsDiff(out!.unit, golden.getFloat32('image'))).toBeLessThan(1e-4);
    golden.close();
  });
});
