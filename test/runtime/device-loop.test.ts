// The device loop on the CPU provider against the CPU pipeline (src/pipeline Generator):
// same model (the golden tiny SD 1.5), prompts, seeds and samplers as the golden txt2img
// cases, same final latents; and against diffusers' final latents.
import { afterAll, describe, expect, it } from 'vitest';
import { exportOnnx } from '../../src/graph/onnx.ts';
import { Generator } from '../../src/pipeline/generate.ts';
import { StableDiffusionModel } from '../../src/pipeline/model.ts';
import { createStepSession, gpuBufferApis, runDeviceLoop } from '../../src/runtime/device-loop/index.ts';
import { SamplerGraphPlan } from '../../src/sampling/graphs/index.ts';
import { ImageRng } from '../../src/sampling/index.ts';
import { SafetensorsFile } from '../../src/tensor/safetensors.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import { goldenJson, goldenPath } from '../helpers/golden.ts';

interface PipelineCase {
  pipeline: string;
  scheduler: string;
  call: { prompt: string; negative_prompt: string; num_inference_steps: number; guidance_scale: number; width: number; height: number; latents?: string };
}
const SAMPLERS: Record<string, string> = { DDIMScheduler: 'DDIM', EulerDiscreteScheduler: 'Euler' };
const cases = Object.entries(goldenJson<Record<string, PipelineCase>>('pipelines', 'pipelines.json'))
  .filter(([name, c]) => c.pipeline === 'StableDiffusionPipeline' && !name.includes('lora') && c.scheduler in SAMPLERS);

function seedOf(c: PipelineCase): number {
  const file = SafetensorsFile.open(goldenPath('pipelines', c.call.latents!));
  const m = /manual_seed\((\d+)\)/.exec(file.metadata.description ?? '');
  file.close();
  if (!m) throw new Error(`${c.call.latents} does not name its seed`);
  return Number(m[1]);
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Difference relative to the reference's scale (at least 1). The graph rounds every op to
 * f32 where the JS samplers keep doubles inside an expression, so results agree to f32
 * rounding (CFG 7.5 amplifies it), not bit for bit. */
function scaledDiff(a: Float32Array, ref: Float32Array): number {
  let scale = 1;
  for (const v of ref) scale = Math.max(scale, Math.abs(v));
  return maxAbsDiff(a, ref) / scale;
}

const model = await StableDiffusionModel.load(goldenPath('models', 'diffusers'), { threads: 1 });
const generator = new Generator(model);
afterAll(() => model.release());

describe('device loop on the CPU provider', () => {
  it('the golden set has txt2img cases for DDIM and Euler', () => {
    expect(new Set(cases.map(([, c]) => SAMPLERS[c.scheduler]))).toEqual(new Set(['DDIM', 'Euler']));
  });

  it.each(cases)('%s: the same latents as the CPU pipeline', async (name, c) => {
    const sampler = SAMPLERS[c.scheduler]!;
    const seed = seedOf(c);
    const { width, height } = c.call;
    const [ref] = await generator.generate({
      prompt: c.call.prompt, negativePrompt: c.call.negative_prompt, sampler, steps: c.call.num_inference_steps,
      cfgScale: c.call.guidance_scale, seed, rng: 'cpu', width, height,
    });

    const shape = [1, 4, height / 8, width / 8];
    const plan = new SamplerGraphPlan(sampler, { steps: c.call.num_inference_steps });
    const step = await createStepSession(exportOnnx(plan.graph(shape, 'stacked')), 'cpu');
    const uncond = await model.prompts.encode(c.call.negative_prompt, 1);
    const cond = await model.prompts.encode(c.call.prompt, 1);
    expect(uncond.tokens).toBe(cond.tokens);
    const context = new Tensor('f32', [2, cond.tokens, model.prompts.width], Float32Array.of(...uncond.states, ...cond.states));
    const rng = new ImageRng({ seeds: [seed], shape: [4, height / 8, width / 8], source: 'cpu' });
    const latents = rng.next().map((v) => Math.fround(v * plan.sampler.initNoiseSigma));
    let previews = 0;
    const result = await runDeviceLoop({
      unet: model.unet, step, plan, latents, latentShape: shape, context, cfgScale: c.call.guidance_scale, noise: rng,
      onStep: () => previews++,
    });
    await step.release();

    expect(result.outputLocations).toEqual(['cpu']);
    expect(result.copiesBack).toBe(0);
    expect(previews).toBe(c.call.num_inference_steps);
    expect(scaledDiff(result.latents, ref!.latents)).toBeLessThan(1e-5);
    const golden = SafetensorsFile.open(goldenPath('pipelines', `${name}.safetensors`));
    expect(maxAbsDiff(result.latents, golden.getFloat32('final_latents'))).toBeLessThan(1e-3);
    golden.close();
  });

  it('refuses conditioning that is not stacked [uncond; cond]', async () => {
    const plan = new SamplerGraphPlan('Euler', { steps: 2 });
    const shape = [1, 4, 8, 8];
    const step = await createStepSession(exportOnnx(plan.graph(shape, 'stacked')), 'cpu');
    await expect(runDeviceLoop({
      unet: model.unet, step, plan, latents: new Float32Array(256), latentShape: shape,
      context: new Tensor('f32', [1, 77, model.prompts.width], new Float32Array(77 * model.prompts.width)), cfgScale: 7,
    })).rejects.toThrow(/stacked as \[uncond x B; cond x B\]/);
    await step.release();
  });

  it('finds the GPU-buffer tensor APIs in this onnxruntime-node build', () => {
    expect(gpuBufferApis()).toEqual({ fromGpuBuffer: true, dispose: true, tensorLocation: true });
  });
});
