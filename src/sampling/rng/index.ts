import { RedlineError } from '../../errors.ts';
import type { NoiseSource } from '../sampler.ts';
import { TorchCudaGenerator } from './philox.ts';
import { TorchCpuGenerator } from './torch-cpu.ts';

export { TorchCpuGenerator } from './torch-cpu.ts';
export { TorchCudaGenerator, H100_LAUNCH, type CudaLaunchShape, philox4x32 } from './philox.ts';
export { MT19937 } from './mt19937.ts';

/** A1111's seed modes: "CPU" = torch CPU generator, "GPU" = torch CUDA generator. */
export type RngSource = 'cpu' | 'gpu';
export const RNG_SOURCES: readonly RngSource[] = ['cpu', 'gpu'];

/** A seeded stream of standard normals; successive calls continue the stream as torch does. */
export interface RandomGenerator {
  randnInto(out: Float32Array): Float32Array;
}

const MAX_SEED = 2n ** 64n - 1n;

function checkSeed(seed: number | bigint): bigint {
  if (typeof seed === 'number' && !Number.isSafeInteger(seed)) {
    throw new RedlineError('bad_seed', `seed must be a whole number, got ${seed}.`);
  }
  const s = BigInt(seed);
  if (s < 0n || s > MAX_SEED) {
    throw new RedlineError('bad_seed', `seed ${s} is out of range.`, 'Use 0 to 18446744073709551615 (A1111 uses -1 for "random": pick one before calling).');
  }
  return s;
}

export function checkRngSource(source: string): RngSource {
  if (source === 'cpu' || source === 'gpu') return source;
  throw new RedlineError('bad_rng', `Unknown rng source "${source}".`, 'Use "cpu" (torch CPU generator, A1111 "CPU") or "gpu" (torch CUDA generator, A1111 "GPU").');
}

/** torch.Generator(device).manual_seed(seed). */
export function createGenerator(seed: number | bigint, source: RngSource = 'cpu'): RandomGenerator {
  const s = checkSeed(seed);
  switch (checkRngSource(source)) {
    case 'cpu': return new TorchCpuGenerator(s);
    case 'gpu': return new TorchCudaGenerator(s);
  }
}

/** torch.randn(shape, generator=torch.Generator(device).manual_seed(seed)) as float32. */
export function randn(seed: number | bigint, shape: readonly number[], source: RngSource = 'cpu'): Float32Array {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new RedlineError('bad_shape', `shape [${shape.join(', ')}] is not a list of sizes.`);
    n *= d;
  }
  return createGenerator(seed, source).randnInto(new Float32Array(n));
}

export interface ImageRngOptions {
  /** One seed per image of the batch (A1111: seed + i). */
  seeds: readonly (number | bigint)[];
  /** One image's latent shape, e.g. [4, height/8, width/8]. */
  shape: readonly number[];
  source?: RngSource;
  /** A1111's "Eta noise seed delta" (ENSD): later draws restart from seed + delta when non-zero. */
  etaNoiseSeedDelta?: number;
}

/**
 * A1111's ImageRNG: one generator per image, seeded with that image's seed. The first
 * draw is the initial latent noise; every later draw (ancestral/LCM/DDIM-eta noise,
 * one per sampler step that needs it) continues each image's own stream, so image i
 * of a batch equals the same seed rendered alone. Batch layout: images stacked on the
 * first axis.
 */
export class ImageRng implements NoiseSource {
  private generators: RandomGenerator[];
  private readonly perImage: number;
  private drawnFirst = false;
  /** Per-image views of the last output buffer, reused while the caller reuses it. */
  private views: { buffer: Float32Array; parts: Float32Array[] } | null = null;
  readonly seeds: readonly bigint[];
  readonly source: RngSource;

  constructor(private readonly options: ImageRngOptions) {
    if (options.seeds.length === 0) throw new RedlineError('bad_seed', 'ImageRng needs at least one seed.');
    this.seeds = options.seeds.map(checkSeed);
    this.source = checkRngSource(options.source ?? 'cpu');
    this.perImage = options.shape.reduce((a, b) => a * b, 1);
    this.generators = this.seeds.map((s) => createGenerator(s, this.source));
  }

  /** Values in one batch draw (images x per-image shape). */
  get length(): number {
    return this.perImage * this.seeds.length;
  }

  /** The next draw for the whole batch (the first call gives the initial noise). */
  next(out: Float32Array = new Float32Array(this.length)): Float32Array {
    if (out.length !== this.length) {
      throw new Error(`ImageRng: buffer has ${out.length} values, a batch draw has ${this.length}`);
    }
    if (this.views?.buffer !== out) {
      this.views = { buffer: out, parts: this.seeds.map((_, i) => out.subarray(i * this.perImage, (i + 1) * this.perImage)) };
    }
    const parts = this.views.parts;
    for (let i = 0; i < this.generators.length; i++) this.generators[i]!.randnInto(parts[i]!);
    if (!this.drawnFirst) {
      this.drawnFirst = true;
      const delta = this.options.etaNoiseSeedDelta ?? 0;
      if (delta !== 0) this.generators = this.seeds.map((s) => createGenerator(s + BigInt(delta), this.source));
    }
    return out;
  }

  /** NoiseSource for samplers: each step's noise is the next batch draw. */
  fill(out: Float32Array): void {
    this.next(out);
  }
}
