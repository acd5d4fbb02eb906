import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openCheckpoint } from '../../src/models/checkpoint/load.ts';
import { MappedWeightSource, type StoredTensor, TensorMapSource } from '../../src/models/checkpoint/weight-source.ts';
import { UnetSession } from '../../src/models/sessions.ts';
import { buildUnet } from '../../src/models/unet.ts';
import { graphCacheKey } from '../../src/runtime/compile.ts';
import { SafetensorsFile, writeSafetensors } from '../../src/tensor/safetensors.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import { goldenPath } from '../helpers/golden.ts';

const tmp = mkdtempSync(join(tmpdir(), 'redline-compile-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const ckpt = openCheckpoint(goldenPath('models', 'diffusers'));
const cfg = ckpt.configs.unet;

/** The tiny UNet stored as f16, as most checkpoints on disk are. */
function f16Weights(): MappedWeightSource {
  const path = join(tmp, 'unet.f16.safetensors');
  const src = ckpt.components.unet;
  writeSafetensors(path, new Map(src.names().map((n) => [n, src.get(n).to('f16')])));
  const file = SafetensorsFile.open(path);
  const entries = new Map<string, StoredTensor>(file.keys().map((k) => [k, { file, key: k, shape: file.info(k).shape }]));
  return new MappedWeightSource('f16 unet', entries);
}

describe('compileGraph through model files', () => {
  const weights = f16Weights();
  const sample = Tensor.f32(Float32Array.from({ length: 2 * 4 * 8 * 8 }, (_, i) => Math.sin(i)), [2, 4, 8, 8]);
  const states = Tensor.f32(Float32Array.from({ length: 2 * 77 * 32 }, (_, i) => Math.cos(i * 0.37)), [2, 77, 32]);

  it('f16 weights linked with an in-graph Cast and f16 weights widened into a cache give identical outputs', async () => {
    const linked = await UnetSession.create(cfg, weights, { inMemoryLimit: 0 });
    const a = (await linked.run(sample, [10, 700.5], states)).data as Float32Array;
    await linked.release();
    const cacheDir = join(tmp, 'cache');
    const cached = await UnetSession.create(cfg, weights, { inMemoryLimit: 0, cacheDir });
    const b = (await cached.run(sample, [10, 700.5], states)).data as Float32Array;
    await cached.release();
    expect(b).toEqual(a);
    expect(a.every(Number.isFinite)).toBe(true);

    // the second session reuses the export instead of writing it again
    const [entry] = readdirSync(cacheDir);
    expect(entry).toMatch(/^unet-[0-9a-f]{32}$/);
    const before = statSync(join(cacheDir, entry!, 'model.onnx.data')).mtimeMs;
    const again = await UnetSession.create(cfg, weights, { inMemoryLimit: 0, cacheDir });
    expect((await again.run(sample, [10, 700.5], states)).data).toEqual(a);
    await again.release();
    expect(readdirSync(cacheDir)).toEqual([entry]);
    expect(statSync(join(cacheDir, entry!, 'model.onnx.data')).mtimeMs).toBe(before);
  });

  it('keys caches by structure and weight origin; in-memory weights are not cached', () => {
    const k1 = graphCacheKey(buildUnet(cfg, weights, { widenWeights: true }));
    expect(k1).toMatch(/^[0-9a-f]{32}$/);
    expect(graphCacheKey(buildUnet(cfg, weights, { widenWeights: true }))).toBe(k1);
    expect(graphCacheKey(buildUnet(cfg, weights, { widenWeights: true, debugOutputs: true }))).not.toBe(k1);
    expect(graphCacheKey(buildUnet(cfg, weights, { widenWeights: false }))).not.toBe(k1);
    const src = ckpt.components.unet;
    const inMemory = new TensorMapSource(new Map(src.names().map((n) => [n, src.get(n)])));
    expect(graphCacheKey(buildUnet(cfg, inMemory))).toBeUndefined();
  });
});
