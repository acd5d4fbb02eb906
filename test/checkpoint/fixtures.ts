// Tiny SD1.x-shaped checkpoints written by code, with a deterministic value pattern per
// tensor so every tensor is distinguishable from every other.
import { SD15_CONFIGS, type SD15Configs } from '../../src/models/checkpoint/configs.ts';
import { type Component, keyMapFor } from '../../src/models/checkpoint/sd15-keymap.ts';
import { TensorMapSource } from '../../src/models/checkpoint/weight-source.ts';
import { Tensor } from '../../src/tensor/tensor.ts';

export function tinyConfigs(wide = false): SD15Configs {
  const c = structuredClone(SD15_CONFIGS);
  c.unet.block_out_channels = wide ? [32, 32, 64, 64] : [8, 8, 16, 16];
  c.unet.norm_num_groups = wide ? 32 : 4;
  c.unet.cross_attention_dim = wide ? 64 : 12;
  c.vae.block_out_channels = wide ? [32, 32, 32, 32] : [4, 8, 8, 8];
  c.vae.norm_num_groups = wide ? 32 : 4;
  c.text_encoder = { ...c.text_encoder, vocab_size: 10, hidden_size: wide ? 64 : 12, intermediate_size: 24, num_hidden_layers: 2, num_attention_heads: wide ? 1 : 2, max_position_embeddings: 7 };
  return c;
}

export function patterned(shape: number[], seed: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = Math.sin(seed * 12.9898 + i * 78.233) * 0.5;
  return new Tensor('f32', shape, d);
}

export function tinySources(configs: SD15Configs): Record<Component, TensorMapSource> {
  let seed = 1;
  const out = {} as Record<Component, TensorMapSource>;
  for (const c of ['unet', 'vae', 'text_encoder'] as const) {
    out[c] = new TensorMapSource(new Map(keyMapFor(c, configs[c]).map((e) => [e.diffusers, patterned(e.shape, seed++)])));
  }
  return out;
}
