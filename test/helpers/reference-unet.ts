import type { StableDiffusionModel } from '../../src/pipeline/model.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import type { EncodedPrompt } from '../../src/text/conditioning.ts';

/**
 * UNet noise predictions for each conditioning of a reference sampler loop written in a
 * test, batched as the pipeline batches them: one UNet call per token length, in order
 * (uncond group first), the batch's B latents repeated for each conditioning. ONNX Runtime's
 * batched kernels then give bit-identical outputs to the pipeline's, so tests can compare
 * images exactly. `x` holds B latents of [4, h, w].
 */
export async function batchedUnetPredictions(
  model: StableDiffusionModel, x: Float32Array, B: number, h: number, w: number, t: number, contexts: EncodedPrompt[],
): Promise<Float32Array[]> {
  const width = model.prompts.width;
  const out: Float32Array[] = [];
  for (const tokens of [...new Set(contexts.map((c) => c.tokens))]) {
    const members = contexts.map((c, i) => [c, i] as const).filter(([c]) => c.tokens === tokens);
    const n = members.length * B;
    const sample = new Float32Array(n * (x.length / B));
    const context = new Float32Array(n * tokens * width);
    members.forEach(([c], j) => {
      sample.set(x, j * x.length);
      for (let b = 0; b < B; b++) context.set(c.states, (j * B + b) * tokens * width);
    });
    const r = await model.unet.run({
      sample: new Tensor('f32', [n, 4, h, w], sample),
      timestep: new Tensor('f32', [n], new Float32Array(n).fill(t)),
      encoder_hidden_states: new Tensor('f32', [n, tokens, width], context),
    }, ['out_sample']);
    const pred = r.out_sample!.toFloat32();
    members.forEach(([, i], j) => {
      out[i] = pred.subarray(j * x.length, (j + 1) * x.length);
    });
  }
  return out;
}
