import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { createGenerator, ImageRng, randn, type RngSource } from '../../src/sampling/rng/index.ts';
import { SafetensorsFile } from '../../src/tensor/safetensors.ts';
import { goldenJson, goldenPath } from '../helpers/golden.ts';

interface RandnKey { key: string; device: 'cpu' | 'cuda'; seed: number; draw: 'single' | 'first' | 'second'; shape: number[] }

/** Keys are '<dev>.seed<seed>.<shape>' or '<dev>.seed<seed>.twodraws_{first,second}.<shape>' (manifest description). */
function parseKey(key: string): RandnKey {
  const m = /^(cpu|cuda)\.seed(\d+)\.(?:twodraws_(first|second)\.)?([\dx]+)$/.exec(key);
  if (!m) throw new Error(`unexpected key in rng/randn.safetensors: ${key}`);
  return { key, device: m[1] as 'cpu' | 'cuda', seed: Number(m[2]), draw: (m[3] as 'first' | 'second') ?? 'single', shape: m[4]!.split('x').map(Number) };
}

/** Python's json writes -Infinity (DPM's lambda_min_clipped in pipelines.json), which JSON.parse rejects. */
function pythonJson<T>(...parts: string[]): T {
  const text = readFileSync(goldenPath(...parts), 'utf8').replace(/(?<=[:,[]\s*)(-?Infinity|NaN)(?=\s*[,}\]])/g, 'null');
  return JSON.parse(text) as T;
}

const file = SafetensorsFile.open(goldenPath('rng', 'randn.safetensors'));
const keys = file.keys().map(parseKey);
const sourceOf = (d: 'cpu' | 'cuda'): RngSource => (d === 'cpu' ? 'cpu' : 'gpu');

function draw(k: RandnKey): Float32Array {
  const n = k.shape.reduce((a, b) => a * b, 1);
  if (k.draw === 'single') return randn(k.seed, k.shape, sourceOf(k.device));
  const g = createGenerator(k.seed, sourceOf(k.device));
  const first = g.randnInto(new Float32Array(n));
  return k.draw === 'first' ? first : g.randnInto(new Float32Array(n));
}

function bitsEqualCount(a: Float32Array, b: Float32Array): number {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  let same = 0;
  for (let i = 0; i < ua.length; i++) if (ua[i] === ub[i]) same++;
  return same;
}

describe('golden set coverage', () => {
  it('has CPU and CUDA draws, both torch paths (numel >= 16 and < 16) and successive draws', () => {
    expect(keys.some((k) => k.device === 'cuda')).toBe(true);
    expect(keys.some((k) => k.device === 'cpu' && k.shape.reduce((a, b) => a * b, 1) < 16)).toBe(true);
    expect(keys.some((k) => k.device === 'cpu' && k.shape.reduce((a, b) => a * b, 1) % 16 !== 0 && k.shape.reduce((a, b) => a * b, 1) > 16)).toBe(true);
    expect(keys.some((k) => k.draw === 'second')).toBe(true);
  });
});

describe.each(keys.filter((k) => k.device === 'cpu'))('torch CPU generator $key', (k) => {
  it('is bit-identical to torch.randn', () => {
    const ref = file.getFloat32(k.key);
    const out = draw(k);
    expect(out.length).toBe(ref.length);
    expect(bitsEqualCount(out, ref)).toBe(ref.length);
  });
});

/**
 * curand's device Box-Muller uses __sincosf, the SFU hardware approximation (abs error
 * about 2^-21 on [-pi, pi]) and logf; portable code cannot reproduce those bits. The
 * Philox stream, offsets and element order are exact; each value is within
 * |s| * 2^-20 + 2 ulp of torch's (s = the Box-Muller radius <= 6.7), and a wrong stream
 * or order would be off by O(1).
 */
describe.each(keys.filter((k) => k.device === 'cuda'))('torch CUDA generator $key', (k) => {
  it('matches torch.randn(device=cuda) to the SFU sincos error', () => {
    const ref = file.getFloat32(k.key);
    const out = draw(k);
    expect(out.length).toBe(ref.length);
    let worst = 0;
    for (let i = 0; i < ref.length; i++) {
      const bound = 6.7 * 2 ** -20 + 2 * 2 ** -23 * Math.max(1, Math.abs(ref[i]!));
      worst = Math.max(worst, Math.abs(out[i]! - ref[i]!) / bound);
    }
    expect(worst).toBeLessThanOrEqual(1);
  });
});

describe('seeded streams used elsewhere in the golden set', () => {
  interface Trajectories { input_seed: string; shape: number[]; trajectories: Record<string, { generator: string | null; n_noise_draws: number }> }
  const traj = goldenJson<Trajectories>('schedulers', 'trajectories.json');
  const seedIn = (text: string) => Number(/manual_seed\((\d+)\)/.exec(text)![1]);

  it('traj_inputs: x_T_unit and F are two successive CPU draws of the stated seed', () => {
    const inputs = SafetensorsFile.open(goldenPath('schedulers', 'traj_inputs.safetensors'));
    const n = traj.shape.reduce((a, b) => a * b, 1);
    const g = createGenerator(seedIn(traj.input_seed), 'cpu');
    expect(bitsEqualCount(g.randnInto(new Float32Array(n)), inputs.getFloat32('x_T_unit'))).toBe(n);
    expect(bitsEqualCount(g.randnInto(new Float32Array(n)), inputs.getFloat32('F'))).toBe(n);
    inputs.close();
  });

  const stochastic = Object.entries(traj.trajectories).filter(([, e]) => e.n_noise_draws > 0 && e.generator);
  it.each(stochastic)('traj %s: the sampler noise is the generator stream, draw after draw', (key, e) => {
    const t = SafetensorsFile.open(goldenPath('schedulers', `traj_${key}.safetensors`));
    const noise = t.getFloat32('noise');
    t.close();
    const n = traj.shape.reduce((a, b) => a * b, 1);
    const g = createGenerator(seedIn(e.generator!), 'cpu');
    for (let d = 0; d < e.n_noise_draws; d++) {
      expect(bitsEqualCount(g.randnInto(new Float32Array(n)), noise.subarray(d * n, (d + 1) * n)), `draw ${d}`).toBe(n);
    }
  });

  it('txt2img_init_latents come from the CPU generator with the pipeline latent seed', () => {
    const manifest = goldenJson<{ config: { pipe: { latent_seed: number } } }>('manifest.json');
    const init = SafetensorsFile.open(goldenPath('pipelines', 'txt2img_init_latents.safetensors'));
    const ref = init.getFloat32('latents');
    const shape = init.info('latents').shape;
    init.close();
    expect(bitsEqualCount(randn(manifest.config.pipe.latent_seed, shape, 'cpu'), ref)).toBe(ref.length);
  });

  it('img2img: VAE eps and add_noise noise are two successive draws of the pipeline generator', () => {
    const pipes = pythonJson<Record<string, { call: { generator?: string; strength?: number } }>>('pipelines', 'pipelines.json');
    const img2img = Object.entries(pipes).filter(([, p]) => p.call.strength !== undefined && p.call.generator);
    expect(img2img.length).toBeGreaterThan(0);
    for (const [key, p] of img2img) {
      const f = SafetensorsFile.open(goldenPath('pipelines', `${key}.safetensors`));
      const d0 = f.getFloat32('randn_draw0');
      const d1 = f.getFloat32('randn_draw1');
      f.close();
      const g = createGenerator(seedIn(p.call.generator!), 'cpu');
      expect(bitsEqualCount(g.randnInto(new Float32Array(d0.length)), d0), key).toBe(d0.length);
      expect(bitsEqualCount(g.randnInto(new Float32Array(d1.length)), d1), key).toBe(d1.length);
    }
  });
});

describe('A1111 ImageRNG batches', () => {
  it('image i of a batch is the seed+i image rendered alone, for the first and later draws', () => {
    const shape = [4, 8, 8];
    const per = 256;
    const rng = new ImageRng({ seeds: [42, 43], shape, source: 'cpu' });
    const first = rng.next();
    const second = rng.next();
    for (const [i, seed] of [42, 43].entries()) {
      const alone = createGenerator(seed, 'cpu');
      expect(bitsEqualCount(first.subarray(i * per, (i + 1) * per), alone.randnInto(new Float32Array(per)))).toBe(per);
      expect(bitsEqualCount(second.subarray(i * per, (i + 1) * per), alone.randnInto(new Float32Array(per)))).toBe(per);
    }
  });
});
