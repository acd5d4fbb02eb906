// A tiny SD1.x-shaped model (random weights from a seeded generator) and formula helpers
// written independently of src/adapters, for the adapter tests.
import { SD15_CONFIGS, type SD15Configs } from '../../src/models/checkpoint/configs.ts';
import { textEncoderKeyMap, unetKeyMap } from '../../src/models/checkpoint/sd15-keymap.ts';
import { TensorMapSource } from '../../src/models/checkpoint/weight-source.ts';
import { Tensor } from '../../src/tensor/tensor.ts';

export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296 - 0.5;
  };
}

export function randn(shape: number[], r: () => number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return new Tensor('f32', shape, Float32Array.from({ length: n }, r));
}

export function tinyConfigs(): Pick<SD15Configs, 'unet' | 'text_encoder'> {
  const c = structuredClone(SD15_CONFIGS);
  c.unet.block_out_channels = [8, 8, 16, 16];
  c.unet.cross_attention_dim = 12;
  c.unet.norm_num_groups = 4;
  c.text_encoder = { ...c.text_encoder, vocab_size: 10, hidden_size: 12, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: 2, max_position_embeddings: 7 };
  return { unet: c.unet, text_encoder: c.text_encoder };
}

export function tinyModel(seed = 1) {
  const r = rng(seed);
  const configs = tinyConfigs();
  const build = (entries: { diffusers: string; shape: number[] }[]) => new TensorMapSource(new Map(entries.map((e) => [e.diffusers, randn(e.shape, r)])));
  return {
    configs,
    components: { unet: build(unetKeyMap(configs.unet)), text_encoder: build(textEncoderKeyMap(configs.text_encoder)) },
  };
}

/** Plain triple loop, [n,k] @ [k,m]. */
export function refMatmul(a: Float32Array, n: number, k: number, b: Float32Array, m: number): Float64Array {
  const out = new Float64Array(n * m);
  for (let i = 0; i < n; i++) for (let j = 0; j < m; j++) {
    let s = 0;
    for (let p = 0; p < k; p++) s += a[i * k + p]! * b[p * m + j]!;
    out[i * m + j] = s;
  }
  return out;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
