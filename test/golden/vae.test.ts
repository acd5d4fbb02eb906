import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { exportOnnx } from '../../src/graph/onnx.ts';
import { openCheckpoint } from '../../src/models/checkpoint/load.ts';
import { buildVaeDecoder, buildVaeEncoder } from '../../src/models/vae.ts';
import { SafetensorsFile } from '../../src/tensor/safetensors.ts';
import { goldenPath } from '../helpers/golden.ts';

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const ATOL = 1e-4; // golden README: components atol 1e-4

describe.each(['diffusers', 'sd15_tiny_original.safetensors'])('VAE from %s matches diffusers AutoencoderKL', (source) => {
  const ckpt = openCheckpoint(goldenPath('models', source), { configs: goldenPath('models', 'diffusers') });
  const golden = SafetensorsFile.open(goldenPath('components', 'vae.safetensors'));

  async function run(graph: ReturnType<typeof buildVaeDecoder>, feeds: Record<string, ort.Tensor>) {
    const session = await ort.InferenceSession.create(exportOnnx(graph));
    try {
      return await session.run(feeds);
    } finally {
      await session.release();
    }
  }

  const feed = (name: string): ort.Tensor => {
    const t = golden.get(name);
    return new ort.Tensor('float32', t.toFloat32(), [...t.shape]);
  };

  it('decodes', async () => {
    const out = await run(buildVaeDecoder(ckpt.configs.vae, ckpt.components.vae), { latent: feed('decode.latent') });
    const image = out.image!;
    expect(image.dims).toEqual(golden.info('decode.out').shape);
    expect(maxAbsDiff(image.data as Float32Array, golden.getFloat32('decode.out'))).toBeLessThan(ATOL);
  });

  it('encodes to mean and log-variance', async () => {
    const out = await run(buildVaeEncoder(ckpt.configs.vae, ckpt.components.vae), { image: feed('encode.image') });
    expect(maxAbsDiff(out.mean!.data as Float32Array, golden.getFloat32('encode.mean'))).toBeLessThan(ATOL);
    expect(maxAbsDiff(out.logvar!.data as Float32Array, golden.getFloat32('encode.logvar'))).toBeLessThan(ATOL);
  });
});
