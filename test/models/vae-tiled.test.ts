import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedlineError } from '../../src/errors.ts';
import { openCheckpoint } from '../../src/models/checkpoint/load.ts';
import { buildVaeDecoder, decodeTiled } from '../../src/models/vae.ts';
import { compileGraph } from '../../src/runtime/compile.ts';
import type { Session } from '../../src/runtime/session.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import { goldenPath } from '../helpers/golden.ts';

// The golden tiny VAE: sample_size 64 and four levels, so diffusers' tiles are 8 latent
// pixels (64 image pixels) at a stride of 6, blended over 16 pixels, 48 kept per tile.
const ckpt = openCheckpoint(goldenPath('models', 'diffusers'));
const cfg = ckpt.configs.vae;
let decoder: Session;
beforeAll(async () => {
  decoder = await compileGraph(buildVaeDecoder(cfg, ckpt.components.vae));
});
afterAll(() => decoder.release());

function latent(b: number, h: number, w: number): Tensor {
  return new Tensor('f32', [b, 4, h, w], Float32Array.from({ length: b * 4 * h * w }, (_, i) => 2 * Math.sin(i * 0.7) + Math.cos(i * 0.13)));
}

/** z[:, :, y0:y0+th, x0:x0+tw] */
function crop(z: Tensor, y0: number, x0: number, th: number, tw: number): Tensor {
  const [b, c, h, w] = z.shape as number[] as [number, number, number, number];
  const out = new Float32Array(b * c * th * tw);
  const d = z.data as Float32Array;
  for (let p = 0; p < b * c; p++) for (let y = 0; y < th; y++) for (let x = 0; x < tw; x++) out[(p * th + y) * tw + x] = d[(p * h + y0 + y) * w + x0 + x]!;
  return new Tensor('f32', [b, c, th, tw], out);
}

const plain = async (z: Tensor): Promise<Tensor> => (await decoder.run({ latent: z }, ['image'])).image!;
const at = (t: Tensor, p: number, y: number, x: number): number => (t.data as Float32Array)[(p * t.shape[2]! + y) * t.shape[3]! + x]!;

describe('decodeTiled (diffusers tiled_decode)', () => {
  it('decodes a latent no larger than a tile in one piece', async () => {
    const z = latent(1, 8, 6);
    expect((await decodeTiled(decoder, z, cfg)).data).toEqual((await plain(z)).data);
  });

  it('keeps each tile\u2019s own decode away from the seams and blends linearly across them', async () => {
    const z = latent(2, 8, 14); // tiles at latent columns 0, 6, 12 and rows 0, 6
    const out = await decodeTiled(decoder, z, cfg);
    expect(out.shape).toEqual([2, 3, 64, 112]);
    const first = await plain(crop(z, 0, 0, 8, 8)); // tile (0, 0): never blended
    const right = await plain(crop(z, 0, 6, 8, 8)); // tile (0, 1): blended with (0, 0) on the left
    let maxDiff = 0;
    for (let p = 0; p < 6; p++) {
      for (let y = 0; y < 48; y++) {
        for (let x = 0; x < 48; x++) maxDiff = Math.max(maxDiff, Math.abs(at(out, p, y, x) - at(first, p, y, x)));
        for (let x = 0; x < 16; x++) {
          const expected = at(first, p, y, 48 + x) * (1 - x / 16) + at(right, p, y, x) * (x / 16);
          maxDiff = Math.max(maxDiff, Math.abs(at(out, p, y, 48 + x) - expected));
        }
        for (let x = 16; x < 48; x++) maxDiff = Math.max(maxDiff, Math.abs(at(out, p, y, 48 + x) - at(right, p, y, x)));
      }
    }
    expect(maxDiff).toBeLessThan(1e-6);
    expect((out.data as Float32Array).every(Number.isFinite)).toBe(true);
  });

  it('differs from a whole decode only near the seams (a smooth result, not a broken one)', async () => {
    const z = latent(1, 8, 14);
    const whole = await plain(z);
    const tiled = await decodeTiled(decoder, z, cfg);
    let mean = 0;
    for (let i = 0; i < whole.data.length; i++) mean += Math.abs((whole.data as Float32Array)[i]! - (tiled.data as Float32Array)[i]!);
    mean /= whole.data.length;
    let scale = 0;
    for (const v of whole.data as Float32Array) scale += Math.abs(v);
    scale /= whole.data.length;
    expect(mean).toBeGreaterThan(0); // group norms saw different statistics
    expect(mean).toBeLessThan(scale);
  });

  it('refuses tilings that do not cover the latent exactly, and bad inputs', async () => {
    await expect(decodeTiled(decoder, latent(1, 20, 20), cfg, { tileLatent: 8, overlap: 0.3 })).rejects.toThrow(RedlineError);
    await expect(decodeTiled(decoder, latent(1, 20, 20), cfg, { overlap: 1 })).rejects.toThrow(/overlap/);
    await expect(decodeTiled(decoder, new Tensor('f32', [4, 8, 8], new Float32Array(256)), cfg)).rejects.toThrow(/latents must be/);
  });
});
