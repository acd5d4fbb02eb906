// From-scratch initial weights for an SD 1.5-family model of any size: every parameter the
// component's config implies (names and shapes from the checkpoint key map), drawn from a
// seeded generator so the same recipe gives the same starting point on every machine.
// Linear/conv weights follow PyTorch's default (uniform, bound 1/sqrt(fan_in)); norms start
// at identity; CLIP embeddings at N(0, 0.02) as transformers' CLIPTextModel; and, as in
// the original LDM code, the UNet's residual output convs, attention output projections
// and final conv start at zero so every block begins as the identity.
import type { Component } from '../../models/checkpoint/sd15-keymap.ts';
import { keyMapFor } from '../../models/checkpoint/sd15-keymap.ts';
import type { SD15Configs } from '../../models/checkpoint/configs.ts';
import { SeededRandom } from '../procedural/random.ts';

const ZERO_INIT_UNET = [/resnets\.\d+\.conv2\.weight$/, /attentions\.\d+\.proj_out\.weight$/, /^conv_out\.weight$/];

export function initComponent(component: Component, configs: SD15Configs, seed: number): Map<string, Float32Array> {
  const rng = new SeededRandom(seed);
  const gauss = (): number => {
    const u = Math.max(rng.next(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
  };
  const out = new Map<string, Float32Array>();
  for (const e of keyMapFor(component, configs[component])) {
    const n = e.shape.reduce((a, b) => a * b, 1);
    const a = new Float32Array(n);
    const name = e.diffusers;
    if (e.shape.length === 1) {
      if (name.endsWith('.weight')) a.fill(1); // norm scales; biases stay 0
    } else if (/(token|position)_embedding\.weight$/.test(name)) {
      for (let i = 0; i < n; i++) a[i] = 0.02 * gauss();
    } else if (!(component === 'unet' && ZERO_INIT_UNET.some((r) => r.test(name)))) {
      const fanIn = n / e.shape[0]!;
      const bound = 1 / Math.sqrt(fanIn);
      for (let i = 0; i < n; i++) a[i] = (2 * rng.next() - 1) * bound;
    }
    out.set(name, a);
  }
  return out;
}

/**
 * Sets a freshly initialised AutoencoderKL (weights from initComponent) to start as the 8x8
 * block-average autoencoder: the encoder's latent channels 0-2 are each block's mean colour,
 * the decoder repeats them over the block. Trained from random weights, a small VAE on flat,
 * mostly uncoloured-by-texture scenes stays far worse than this trivial code for thousands
 * of steps (measured: MSE 0.16 after 1,500 steps against 0.03 for block means at 48 px), because
 * every exit of encoder and decoder goes through a group norm, which discards the scale and
 * offset that carry flat colour. Here a constant channel (the conv_in bias `offset`)
 * dominates each group norm's statistics, so the norm is close to a fixed affine map; the
 * norm's scale and shift then put the colour channels where SiLU is nearly linear, and the
 * following conv undoes that. Residual branches and attention outputs start at zero, so
 * every block is the identity and training adds detail on top. Needs norm_num_groups 1.
 */
export function initVaeAsBlockAverage(w: Map<string, Float32Array>, cfg: SD15Configs['vae'], offset = 50): void {
  if (cfg.norm_num_groups !== 1) throw new Error('initVaeAsBlockAverage needs norm_num_groups 1 (one statistics group per norm).');
  const get = (name: string): Float32Array => {
    const a = w.get(name);
    if (!a) throw new Error(`VAE weight ${name} is missing`);
    return a;
  };
  // colour channels 0-2 and the constant channel 3 pass through; everything else starts at 0
  const CARRIED = 4;
  /** A 3x3 conv that maps channel c to channel c (c < channels) through the given taps. */
  const setConv = (name: string, taps: Array<[number, number]>, channels: number, tap = 1): void => {
    const wt = get(`${name}.weight`);
    const bias = get(`${name}.bias`);
    const cin = wt.length / bias.length / 9;
    wt.fill(0);
    bias.fill(0);
    for (let c = 0; c < channels; c++) for (const [y, x] of taps) wt[((c * cin + c) * 3 + y) * 3 + x] = tap;
  };
  const center: Array<[number, number]> = [[1, 1]];
  const setPointwise = (name: string, channels: number): void => {
    const wt = get(`${name}.weight`);
    const cout = get(`${name}.bias`).length;
    const cin = wt.length / cout;
    wt.fill(0);
    for (let c = 0; c < channels; c++) wt[c * cin + c] = 1;
    get(`${name}.bias`).fill(0);
  };
  for (const [name, a] of w) {
    if (/resnets\.\d+\.conv2\.(weight|bias)$/.test(name) || /attentions\.\d+\.to_out\.0\.(weight|bias)$/.test(name)) a.fill(0);
    if (/conv_shortcut\.weight$/.test(name)) setPointwise(name.slice(0, -'.weight'.length), CARRIED);
  }
  const levels = cfg.block_out_channels.length;
  // SiLU is nearly linear around 4: silu(4 + x) ~ SILU_AT_4 + SILU_SLOPE x for |x| <= 1
  const SILU_AT_4 = 4 / (1 + Math.exp(-4));
  const sig4 = 1 / (1 + Math.exp(-4));
  const SILU_SLOPE = sig4 * (1 + 4 * (1 - sig4));
  const normAsAffine = (name: string, channels: number): void => {
    // with the constant channel at `offset` and the rest near 0: mean offset/C, std offset*sqrt(C-1)/C
    const gamma = get(`${name}.weight`);
    const beta = get(`${name}.bias`);
    const c = gamma.length;
    const std = (offset * Math.sqrt(c - 1)) / c;
    for (let i = 0; i < channels; i++) {
      gamma[i] = std;
      beta[i] = 4 + offset / c;
    }
  };
  const exitConv = (name: string, channels: number): void => {
    setConv(name, center, channels, 1 / SILU_SLOPE);
    get(`${name}.bias`).fill(-SILU_AT_4 / SILU_SLOPE, 0, channels);
  };

  // encoder: colour in, 2x2 means at each downsampler, block means out
  setConv('encoder.conv_in', center, 3);
  get('encoder.conv_in.bias')[3] = offset;
  for (let i = 0; i < levels - 1; i++) setConv(`encoder.down_blocks.${i}.downsamplers.0.conv`, [[0, 0], [0, 1], [1, 0], [1, 1]], CARRIED, 0.25);
  normAsAffine('encoder.conv_norm_out', 3);
  exitConv('encoder.conv_out', 3);
  setPointwise('quant_conv', 2 * cfg.latent_channels);

  // decoder: block means in, nearest upsampling at each upsampler, colour out
  setPointwise('post_quant_conv', cfg.latent_channels);
  setConv('decoder.conv_in', center, 3);
  get('decoder.conv_in.bias')[3] = offset;
  for (let i = 0; i < levels - 1; i++) setConv(`decoder.up_blocks.${i}.upsamplers.0.conv`, center, CARRIED);
  normAsAffine('decoder.conv_norm_out', 3);
  exitConv('decoder.conv_out', 3);
}
