// The golden LoRA outputs (diffusers + PEFT, LoRA fused at each scale) reproduced through
// the runtime-strength path: the adapter is a graph input and the scale a scalar feed.
import { afterAll, describe, expect, it } from 'vitest';
import { Generator } from '../../src/pipeline/generate.ts';
import { StableDiffusionModel } from '../../src/pipeline/model.ts';
import { SafetensorsFile } from '../../src/tensor/safetensors.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import { goldenJson, goldenPath } from '../helpers/golden.ts';

// golden README: components atol 1e-4; pipeline latents atol 1e-3, images atol 1e-4
const COMPONENT_ATOL = 1e-4;
const LATENT_ATOL = 1e-3;
const IMAGE_ATOL = 1e-4;

const goldens = SafetensorsFile.open(goldenPath('lora', 'lora_goldens.safetensors'));
const unetInputs = SafetensorsFile.open(goldenPath('components', 'unet.safetensors'));
const teCases = goldenJson<{ input_ids: number[][] }>('components', 'text_encoder.json');
const model = await StableDiffusionModel.load(goldenPath('models', 'diffusers'), { adapterMode: 'runtime' });
afterAll(async () => {
  await model.release();
  goldens.close();
  unetInputs.close();
});

// "scale0.7.te_last_hidden_state", "scale1.0.unet_case1.out", ...
const scales = [...new Set(goldens.keys().map((k) => /^scale([0-9.]+)\./.exec(k)?.[1]).filter((s): s is string => !!s))];
const unetCases = [...new Set(goldens.keys().map((k) => /^scale[0-9.]+\.unet_(case\d+)\.out$/.exec(k)?.[1]).filter((s): s is string => !!s))];

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('golden LoRA outputs through the runtime-strength path', () => {
  it('the golden set has scales and UNet cases', () => {
    expect(scales.length).toBeGreaterThanOrEqual(2);
    expect(unetCases.length).toBeGreaterThan(0);
  });

  for (const file of ['lora_kohya.safetensors', 'lora_peft.safetensors']) {
    for (const scale of scales) {
      it(`${file} at ${scale}: text encoder (last, clip skip 2) and UNet cases`, async () => {
        const adapter = model.loadAdapter(goldenPath('lora', file));
        await model.setAdapters([{ adapter, te: Number(scale), unet: Number(scale) }]);
        expect(model.unet.inputNames).toContain('lora.0.strength_unet');
        expect(model.textEncoder.inputNames).toContain('lora.0.strength_te');
        const ids = teCases.input_ids;
        const te = await model.textEncoder.run({ input_ids: new Tensor('i64', [ids.length, ids[0]!.length], BigInt64Array.from(ids.flat(), BigInt)) }, ['last_hidden_state', 'clip_skip_2']);
        expect(maxAbsDiff(te.last_hidden_state!.toFloat32(), goldens.getFloat32(`scale${scale}.te_last_hidden_state`))).toBeLessThan(COMPONENT_ATOL);
        expect(maxAbsDiff(te.clip_skip_2!.toFloat32(), goldens.getFloat32(`scale${scale}.te_clip_skip2`))).toBeLessThan(COMPONENT_ATOL);
        for (const c of unetCases) {
          const out = await model.unet.run({
            sample: unetInputs.get(`${c}.sample`),
            timestep: unetInputs.get(`${c}.timestep`),
            encoder_hidden_states: unetInputs.get(`${c}.encoder_hidden_states`),
          }, ['out_sample']);
          expect(maxAbsDiff(out.out_sample!.toFloat32(), goldens.getFloat32(`scale${scale}.unet_${c}.out`)), c).toBeLessThan(COMPONENT_ATOL);
        }
      });
    }
  }
});

interface PipelineCase { call: Record<string, unknown>; lora_scale: number }

describe('txt2img with a runtime LoRA matches diffusers with the LoRA fused', () => {
  const cases = Object.entries(goldenJson<Record<string, PipelineCase>>('pipelines', 'pipelines.json')).filter(([n]) => n.includes('lora'));
  it('has LoRA pipeline cases', () => expect(cases.length).toBeGreaterThan(0));
  const generator = new Generator(model);
  for (const [name, c] of cases) {
    it.each(['lora_kohya.safetensors', 'lora_peft.safetensors'])(`${name} from %s`, async (file) => {
      const golden = SafetensorsFile.open(goldenPath('pipelines', `${name}.safetensors`));
      const latentsFile = SafetensorsFile.open(goldenPath('pipelines', String(c.call.latents)));
      const seed = Number(/manual_seed\((\d+)\)/.exec(latentsFile.metadata.description ?? '')![1]);
      latentsFile.close();
      const builds = model.adapterSessionBuilds;
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
      // the component tests above built this signature's graphs: a swap, no rebuild
      expect(model.adapterSessionBuilds).toBe(builds);
      expect(model.unet.inputNames).toContain('lora.0.strength_unet');
      expect(maxAbsDiff(out!.latents, golden.getFloat32('final_latents'))).toBeLessThan(LATENT_ATOL);
      expect(maxAbsDiff(out!.unit, golden.getFloat32('image'))).toBeLessThan(IMAGE_ATOL);
      golden.close();
    });
  }
});
