// txt2img with a LoRA fused at the golden scale, against diffusers' fused pipeline, from
// both the PEFT and the kohya file of the same adapter.
import { afterAll, describe, expect, it } from 'vitest';
import { Generator } from '../../src/pipeline/generate.ts';
import { StableDiffusionModel } from '../../src/pipeline/model.ts';
import { SafetensorsFile } from '../../src/tensor/safetensors.ts';
import { goldenJson, goldenPath } from '../helpers/golden.ts';

interface LoraCase { call: Record<string, unknown>; lora_scale: number }

const cases = goldenJson<Record<string, LoraCase>>('pipelines', 'pipelines.json');
const loraCases = Object.entries(cases).filter(([name]) => name.includes('lora'));
const model = await StableDiffusionModel.load(goldenPath('models', 'diffusers'));
const generator = new Generator(model);
afterAll(() => model.release());

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('txt2img with a LoRA matches diffusers', () => {
  it('has LoRA golden cases', () => expect(loraCases.length).toBeGreaterThan(0));

  for (const [name, c] of loraCases) {
    it.each(['lora_peft.safetensors', 'lora_kohya.safetensors'])(`${name} from %s`, async (file) => {
      const golden = SafetensorsFile.open(goldenPath('pipelines', `${name}.safetensors`));
      const latentsFile = SafetensorsFile.open(goldenPath('pipelines', String(c.call.latents)));
      const seed = Number(/manual_seed\((\d+)\)/.exec(latentsFile.metadata.description ?? '')![1]);
      latentsFile.close();
      const [out] = await generator.generate({
        prompt: String(c.call.prompt),
        negativePrompt: String(c.call.negative_prompt),
        sampler: 'DDIM',
        steps: c.call.num_inference_steps as number,
        cfgScale: c.call.guidance_scale as number,
        seed,
        rng: 'cpu',
        width: c.call.width as number,
        height: c.call.height as number,
        adapters: [{ path: goldenPath('lora', file), te: c.lora_scale, unet: c.lora_scale }],
      });
      expect(maxAbsDiff(out!.latents, golden.getFloat32('final_latents'))).toBeLessThan(1e-3);
      expect(maxAbsDiff(out!.unit, golden.getFloat32('image'))).toBeLessThan(1e-4);
      golden.close();
    });
  }

  it('returns to the base model when the adapters are removed', async () => {
    const base = SafetensorsFile.open(goldenPath('pipelines', 'txt2img_ddim.safetensors'));
    const c = cases.txt2img_ddim!;
    const latentsFile = SafetensorsFile.open(goldenPath('pipelines', String(c.call.latents)));
    const seed = Number(/manual_seed\((\d+)\)/.exec(latentsFile.metadata.description ?? '')![1]);
    latentsFile.close();
    const [out] = await generator.generate({
      prompt: String(c.call.prompt), negativePrompt: String(c.call.negative_prompt), sampler: 'DDIM',
      steps: c.call.num_inference_steps as number, cfgScale: c.call.guidance_scale as number, seed, rng: 'cpu',
      width: c.call.width as number, height: c.call.height as number,
    });
    expect(maxAbsDiff(out!.latents, base.getFloat32('final_latents'))).toBeLessThan(1e-3);
  });
});
