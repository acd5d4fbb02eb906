import { spawnSync } from 'node:child_process';
import { existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { RedlineError } from '../../src/errors.ts';
import { Graph } from '../../src/graph/graph.ts';
import * as op from '../../src/graph/ops.ts';
import { CACHE_MAX_ENV, cacheMaxBytesFromEnv, DEFAULT_CACHE_MAX_BYTES, listCacheEntries, pruneCache } from '../../src/runtime/compile-cache.ts';
import { compileGraph } from '../../src/runtime/compile.ts';
import type { Session } from '../../src/runtime/session.ts';
import { openCheckpoint } from '../../src/models/checkpoint/load.ts';
import { buildVaeDecoder } from '../../src/models/vae.ts';
import { SafetensorsFile } from '../../src/tensor/safetensors.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import { goldenPath } from '../helpers/golden.ts';

const tmp = mkdtempSync(join(tmpdir(), 'redline-compile-cache-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** y = x @ W with a 64x64 weight whose bytes (and origin) differ per `seed`. */
function graph(name: string, seed: number): Graph {
  const g = new Graph(name);
  const w = Float32Array.from({ length: 64 * 64 }, (_, i) => Math.sin(i * 0.01 + seed));
  const weight = g.weight('w', { dtype: 'f32', shape: [64, 64], read: () => w, origin: `test-weights:${seed}` });
  g.output('y', op.matmul(g.input('x', 'f32', ['batch', 64]), weight));
  return g;
}

const x = Tensor.f32(Float32Array.from({ length: 2 * 64 }, (_, i) => Math.cos(i)), [2, 64]);

async function compileAndRun(cacheDir: string, name: string, seed: number, cacheMaxBytes: number): Promise<{ session: Session; y: Float32Array }> {
  const session = await compileGraph(graph(name, seed), { cacheDir, cacheMaxBytes });
  const y = (await session.run({ x })).y!.data as Float32Array;
  return { session, y };
}

async function use(cacheDir: string, name: string, seed: number, cacheMaxBytes: number): Promise<Float32Array> {
  const { session, y } = await compileAndRun(cacheDir, name, seed, cacheMaxBytes);
  await session.release();
  return y;
}

const names = (cacheDir: string): string[] => listCacheEntries(cacheDir).map((e) => e.name.replace(/-[0-9a-f]{32}$/, ''));

/** Size of one entry of this test's graphs (all have the same structure and weight size). */
async function entryBytes(): Promise<number> {
  const dir = join(tmp, 'probe');
  await use(dir, 'probe', 0, Infinity);
  const [e] = listCacheEntries(dir);
  expect(e!.bytes).toBeGreaterThan(64 * 64 * 4);
  return e!.bytes;
}

describe('compile cache for small graphs', () => {
  it('caches the golden VAE decoder (weights from its file); miss and hit match diffusers', async () => {
    const cacheDir = join(tmp, 'vae');
    const ckpt = openCheckpoint(goldenPath('models', 'diffusers'));
    const golden = SafetensorsFile.open(goldenPath('components', 'vae.safetensors'));
    const latent = golden.get('decode.latent').to('f32');
    const expected = golden.getFloat32('decode.out');
    const outputs: Float32Array[] = [];
    const written: number[] = [];
    for (let i = 0; i < 2; i++) {
      const session = await compileGraph(buildVaeDecoder(ckpt.configs.vae, ckpt.components.vae), { cacheDir });
      outputs.push((await session.run({ latent }, ['image'])).image!.data as Float32Array);
      await session.release();
      expect(names(cacheDir)).toEqual(['vae_decoder']);
      written.push(statSync(join(listCacheEntries(cacheDir)[0]!.path, 'model.onnx')).mtimeMs);
    }
    expect(written[1]).toBe(written[0]); // the second session loaded the entry, not a new export
    expect(outputs[1]).toEqual(outputs[0]);
    let maxDiff = 0;
    for (let i = 0; i < expected.length; i++) maxDiff = Math.max(maxDiff, Math.abs(outputs[1]![i]! - expected[i]!));
    expect(maxDiff).toBeLessThan(1e-4); // golden README: components atol 1e-4
  });
});

describe('compile cache size cap', () => {
  it('evicts the least recently used entries once over the cap, and a later use rebuilds them', async () => {
    const cacheDir = join(tmp, 'lru');
    const cap = Math.floor((await entryBytes()) * 2.5);
    const a1 = await use(cacheDir, 'a', 1, cap);
    await use(cacheDir, 'b', 2, cap);
    expect(await use(cacheDir, 'a', 1, cap)).toEqual(a1); // a hit: now b is the oldest
    await use(cacheDir, 'c', 3, cap);
    expect(names(cacheDir)).toEqual(['a', 'c']);
    expect(listCacheEntries(cacheDir).reduce((n, e) => n + e.bytes, 0)).toBeLessThanOrEqual(cap);
    await use(cacheDir, 'b', 2, cap); // rebuilt; a is now the oldest
    expect(names(cacheDir)).toEqual(['c', 'b']);
    expect(await use(cacheDir, 'a', 1, cap)).toEqual(a1);
    expect(names(cacheDir)).toEqual(['b', 'a']);
  });

  it('never evicts an entry a live session uses, and frees it once released', async () => {
    const cacheDir = join(tmp, 'in-use');
    const cap = Math.floor((await entryBytes()) * 1.5);
    const held = await compileAndRun(cacheDir, 'held', 1, cap);
    expect(listCacheEntries(cacheDir)[0]!.inUse).toBe(true);
    await use(cacheDir, 'b', 2, cap); // over the cap, but 'held' is in use and 'b' is new
    expect(names(cacheDir)).toEqual(['held', 'b']);
    await use(cacheDir, 'c', 3, cap); // 'b' goes; 'held' stays although it is the oldest
    expect(names(cacheDir)).toEqual(['held', 'c']);
    await held.session.release();
    expect(listCacheEntries(cacheDir)[0]!.inUse).toBe(false);
    expect(pruneCache(cacheDir, cap).evicted.map((n) => n.replace(/-[0-9a-f]{32}$/, ''))).toEqual(['held']);
    expect(names(cacheDir)).toEqual(['c']);
  });

  it('counts leases of other live processes, not of dead ones; removes dead writers\u2019 leftovers', async () => {
    const cacheDir = join(tmp, 'leases');
    await use(cacheDir, 'a', 1, Infinity);
    await use(cacheDir, 'b', 2, Infinity);
    const [a, b] = listCacheEntries(cacheDir);
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    writeFileSync(join(a!.path, 'leases', `${dead}.0@${hostname()}`), '');
    writeFileSync(join(b!.path, 'leases', `${process.ppid}.0@${hostname()}`), '');
    const leftover = `${b!.path}.partial-${dead}`;
    mkdirSync(leftover);
    writeFileSync(join(leftover, 'model.onnx.data'), new Uint8Array(1 << 16));
    expect(listCacheEntries(cacheDir).map((e) => e.inUse)).toEqual([false, true]);
    expect(pruneCache(cacheDir, 0).evicted).toEqual([a!.name]);
    expect(readdirSync(cacheDir)).toEqual([b!.name]);
  });

  it('does not count bytes hard-linked from elsewhere (a checkpoint the entry links to)', async () => {
    const cacheDir = join(tmp, 'links');
    await use(cacheDir, 'a', 1, Infinity);
    const [e] = listCacheEntries(cacheDir);
    const outside = join(tmp, 'checkpoint.bin');
    writeFileSync(outside, new Uint8Array(1 << 20));
    linkSync(outside, join(e!.path, 'model.onnx.src0.checkpoint.bin'));
    expect(listCacheEntries(cacheDir)[0]!.bytes).toBe(e!.bytes);
    rmSync(outside); // the entry's link is now the only copy: it counts
    expect(listCacheEntries(cacheDir)[0]!.bytes).toBe(e!.bytes + (1 << 20));
  });

  it('takes its default cap from the environment, refusing values that are not sizes', () => {
    expect(cacheMaxBytesFromEnv({})).toBe(DEFAULT_CACHE_MAX_BYTES);
    expect(cacheMaxBytesFromEnv({ [CACHE_MAX_ENV]: '1.5' })).toBe(1.5 * 2 ** 30);
    expect(cacheMaxBytesFromEnv({ [CACHE_MAX_ENV]: '0' })).toBe(0);
    for (const bad of ['-1', 'lots', '20GB']) {
      expect(() => cacheMaxBytesFromEnv({ [CACHE_MAX_ENV]: bad })).toThrow(RedlineError);
      expect(() => cacheMaxBytesFromEnv({ [CACHE_MAX_ENV]: bad })).toThrow(CACHE_MAX_ENV);
    }
  });

  it('leaves a cache without entries alone', () => {
    const cacheDir = join(tmp, 'none');
    expect(pruneCache(cacheDir, 0)).toEqual({ evicted: [], bytes: 0 });
    expect(existsSync(cacheDir)).toBe(false);
  });
});
