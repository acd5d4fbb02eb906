// diffusers UNet2DConditionModel (SD 1.x family) as a graph, built from the model's own
// config: block_out_channels, layers_per_block, heads, cross-attention width, norm groups.
// Batch, height and width are symbolic and any latent size works (images any multiple of
// 8): each upsampling resizes to its skip connection's size, as diffusers does when a
// stride-2 convolution rounded up.
// Attention is com.microsoft.MultiHeadAttention, so the [B, heads, HW, HW] score matrices
// never leave the kernel.

import { RedlineError } from '../errors.ts';
import { Graph, type Value } from '../graph/graph.ts';
import * as op from '../graph/ops.ts';
import { setGraphSessionDefaults } from '../runtime/compile.ts';
import type { UNetConfig } from './checkpoint/configs.ts';
import { bindParams, convModule, linearModule, type ModuleHook, type ParamBinder, type WeightSource } from './weights.ts';

export type { UNetConfig } from './checkpoint/configs.ts';

export interface UnetBuildOptions {
  /** Also output intermediate activations as `debug.<module>` (time_proj, time_embedding,
   * conv_in, down_blocks.i, mid_block, up_blocks.i, conv_norm_out), for locating a
   * mismatch against a reference. */
  debugOutputs?: boolean;
  /** Convert f16/bf16 weights to f32 at export instead of in ORT (for cached exports). */
  widenWeights?: boolean;
  /** Adapter branches on the Linear/Conv2d modules (runtime LoRA, src/adapters/graph-lora.ts). */
  moduleHook?: ModuleHook;
  /** 'mha' (default): com.microsoft.MultiHeadAttention, the attention maps stay inside the
   * kernel. 'reference': MatMul/Softmax (materialises [B, heads, HW, HW]; +2.3 GiB at 512px). */
  attention?: 'mha' | 'reference';
}

const SUPPORTED_DOWN = new Set(['CrossAttnDownBlock2D', 'DownBlock2D']);
const SUPPORTED_UP = new Set(['CrossAttnUpBlock2D', 'UpBlock2D']);

function unsupported(what: string): never {
  throw new RedlineError('config_unsupported', `UNet config: ${what} is not supported.`, 'Redline runs SD 1.x-family UNets (UNet2DConditionModel with the SD 1.5 block types).');
}

function perBlock<T>(v: T | T[], n: number, what: string): T[] {
  if (!Array.isArray(v)) return Array(n).fill(v) as T[];
  if (v.length !== n) unsupported(`${what} has ${v.length} entries for ${n} blocks`);
  return v;
}

interface Ctx {
  g: Graph;
  p: ParamBinder;
  cfg: UNetConfig;
  groups: number;
  eps: number;
  temb: Value;
  context: Value;
  attention: 'mha' | 'reference';
}

function conv(c: Ctx, name: string, x: Value, opts: { stride?: number } = {}): Value {
  return convModule(c.p, name, x, opts);
}

function linear(c: Ctx, name: string, x: Value, bias = true): Value {
  return linearModule(c.p, name, x, { bias });
}

function groupNorm(c: Ctx, name: string, x: Value, eps: number): Value {
  return op.groupNorm(x, c.p(`${name}.weight`), c.p(`${name}.bias`), c.groups, eps);
}

function resnet(c: Ctx, name: string, x: Value): Value {
  return c.g.scope(name, () => {
    let h = op.silu(groupNorm(c, `${name}.norm1`, x, c.eps));
    h = conv(c, `${name}.conv1`, h);
    const t = linear(c, `${name}.time_emb_proj`, op.silu(c.temb)); // [B, C]
    h = op.add(h, op.unsqueeze(t, [2, 3]));
    h = op.silu(groupNorm(c, `${name}.norm2`, h, c.eps));
    h = conv(c, `${name}.conv2`, h);
    const shortcut = c.p.has(`${name}.conv_shortcut.weight`) ? conv(c, `${name}.conv_shortcut`, x) : x;
    const out = op.add(shortcut, h);
    const scale = (c.cfg.resnet_out_scale_factor as number | undefined) ?? 1;
    return scale === 1 ? out : op.div(out, scale);
  });
}

function attention(c: Ctx, name: string, x: Value, context: Value | null, heads: number): Value {
  const q = linear(c, `${name}.to_q`, x, false);
  const src = context ?? x;
  const k = linear(c, `${name}.to_k`, src, false);
  const v = linear(c, `${name}.to_v`, src, false);
  const attended = c.attention === 'reference' ? op.attentionReference(q, k, v, heads) : op.multiHeadAttention(q, k, v, heads);
  return linear(c, `${name}.to_out.0`, attended);
}

function transformerBlock(c: Ctx, name: string, x: Value, heads: number): Value {
  const ln = (n: string, v: Value): Value => op.layerNorm(v, c.p(`${name}.${n}.weight`), c.p(`${name}.${n}.bias`), 1e-5);
  x = op.add(x, attention(c, `${name}.attn1`, ln('norm1', x), null, heads));
  x = op.add(x, attention(c, `${name}.attn2`, ln('norm2', x), c.context, heads));
  const proj = linear(c, `${name}.ff.net.0.proj`, ln('norm3', x)); // GEGLU
  const inner = (proj.shape[2] as number) / 2;
  const [hidden, gate] = op.split(proj, -1, [inner, inner]) as [Value, Value];
  return op.add(x, linear(c, `${name}.ff.net.2`, op.mul(hidden, op.gelu(gate))));
}

function transformer2d(c: Ctx, name: string, x: Value, heads: number): Value {
  return c.g.scope(name, () => {
    const channels = x.shape[1] as number;
    if (channels % heads !== 0) unsupported(`${channels} channels in ${name} are not divisible into ${heads} heads`);
    const linearProj = c.cfg.use_linear_projection === true;
    let h = groupNorm(c, `${name}.norm`, x, 1e-6);
    const toTokens = (v: Value): Value => op.reshape(op.transpose(v, [0, 2, 3, 1]), [0, -1, v.shape[1] as number]);
    if (linearProj) h = linear(c, `${name}.proj_in`, toTokens(h));
    else h = toTokens(conv(c, `${name}.proj_in`, h));
    const layers = c.p.has(`${name}.transformer_blocks.1.norm1.weight`) ? countBlocks(c, name) : 1;
    for (let i = 0; i < layers; i++) h = transformerBlock(c, `${name}.transformer_blocks.${i}`, h, heads);
    // tokens [B, HW, C] -> [B, C, H, W]
    const inner = h.shape[2] as number;
    const toImage = (v: Value): Value => op.reshapeLike(op.transpose(v, [0, 2, 1]), linearProj ? x : withChannels(x, inner));
    h = linearProj ? toImage(linear(c, `${name}.proj_out`, h)) : conv(c, `${name}.proj_out`, toImage(h));
    return op.add(h, x);
  });
}

/** x itself when it has `channels` channels (proj_in keeps the width in SD 1.x). */
function withChannels(x: Value, channels: number): Value {
  if (x.shape[1] !== channels) unsupported(`a transformer inner width (${channels}) different from its channels (${x.shape[1]})`);
  return x;
}

function countBlocks(c: Ctx, name: string): number {
  let n = 0;
  while (c.p.has(`${name}.transformer_blocks.${n}.norm1.weight`)) n++;
  return n;
}

function timestepEmbedding(g: Graph, t: Value, dim: number, flipSinToCos: boolean, shift: number): Value {
  // diffusers get_timestep_embedding, in float32 steps as torch computes it
  const half = Math.floor(dim / 2);
  const ln = Math.fround(-Math.log(10000));
  const freqs: number[] = [];
  for (let i = 0; i < half; i++) freqs.push(Math.fround(Math.exp(Math.fround(Math.fround(ln * i) / (half - shift)))));
  const args = op.mul(op.unsqueeze(t, [1]), op.constant(g, 'f32', freqs, [1, half], 'freqs')); // [B, half]
  const [a, b] = flipSinToCos ? [op.cos(args), op.sin(args)] : [op.sin(args), op.cos(args)];
  if (dim % 2) unsupported('an odd time embedding width');
  return op.concat([a, b], 1);
}

/** Graph inputs: sample f32 [batch, in_channels, height, width], timestep f32 [batch],
 * encoder_hidden_states f32 [batch, sequence, cross_attention_dim]. Output: out_sample. */
export function buildUnet(cfg: UNetConfig, weights: WeightSource, opts: UnetBuildOptions = {}): Graph {
  for (const t of cfg.down_block_types) if (!SUPPORTED_DOWN.has(t)) unsupported(`down block type ${t}`);
  for (const t of cfg.up_block_types) if (!SUPPORTED_UP.has(t)) unsupported(`up block type ${t}`);
  if ((cfg.mid_block_type ?? 'UNetMidBlock2DCrossAttn') !== 'UNetMidBlock2DCrossAttn') unsupported(`mid block type ${cfg.mid_block_type}`);
  if (cfg.addition_embed_type || cfg.class_embed_type) unsupported('class or addition embeddings (SDXL-style conditioning)');
  if ((cfg.resnet_time_scale_shift as string | undefined ?? 'default') !== 'default') unsupported(`resnet_time_scale_shift ${cfg.resnet_time_scale_shift}`);
  if ((cfg.time_embedding_type as string | undefined ?? 'positional') !== 'positional') unsupported(`time_embedding_type ${cfg.time_embedding_type}`);
  const n = cfg.block_out_channels.length;
  const heads = perBlock((cfg.num_attention_heads as number | number[] | null | undefined) ?? cfg.attention_head_dim, n, 'attention_head_dim');

  const g = new Graph('unet');
  const p = bindParams(g, weights, 'UNet', { widen: !!opts.widenWeights, ...(opts.moduleHook ? { moduleHook: opts.moduleHook } : {}) });
  const sample = g.input('sample', 'f32', ['batch', cfg.in_channels, 'height', 'width']);
  const timestep = g.input('timestep', 'f32', ['batch']);
  const context = g.input('encoder_hidden_states', 'f32', ['batch', 'sequence', cfg.cross_attention_dim]);
  const debug = (name: string, v: Value): void => {
    if (opts.debugOutputs) g.output(`debug.${name}`, v);
  };

  const tproj = timestepEmbedding(g, timestep, cfg.block_out_channels[0]!, (cfg.flip_sin_to_cos as boolean | undefined) ?? true, (cfg.freq_shift as number | undefined) ?? 0);
  debug('time_proj', tproj);
  const c0: Omit<Ctx, 'temb'> = { g, p, cfg, groups: cfg.norm_num_groups, eps: (cfg.norm_eps as number | undefined) ?? 1e-5, context, attention: opts.attention ?? 'mha' };
  const temb = g.scope('time_embedding', () =>
    linear({ ...c0, temb: tproj }, 'time_embedding.linear_2', op.silu(linear({ ...c0, temb: tproj }, 'time_embedding.linear_1', tproj))),
  );
  debug('time_embedding', temb);
  const c: Ctx = { ...c0, temb };

  let h = conv(c, 'conv_in', sample);
  debug('conv_in', h);
  const skips: Value[] = [h];
  cfg.down_block_types.forEach((type, i) => {
    const name = `down_blocks.${i}`;
    for (let j = 0; j < cfg.layers_per_block; j++) {
      h = resnet(c, `${name}.resnets.${j}`, h);
      if (type === 'CrossAttnDownBlock2D') h = transformer2d(c, `${name}.attentions.${j}`, h, heads[i]!);
      skips.push(h);
    }
    if (i < n - 1) {
      h = conv(c, `${name}.downsamplers.0.conv`, h, { stride: 2 });
      skips.push(h);
    }
    debug(name, h);
  });

  h = resnet(c, 'mid_block.resnets.0', h);
  h = transformer2d(c, 'mid_block.attentions.0', h, heads[n - 1]!);
  h = resnet(c, 'mid_block.resnets.1', h);
  debug('mid_block', h);

  const upHeads = [...heads].reverse();
  cfg.up_block_types.forEach((type, i) => {
    const name = `up_blocks.${i}`;
    for (let j = 0; j < cfg.layers_per_block + 1; j++) {
      h = op.concat([h, skips.pop()!], 1);
      h = resnet(c, `${name}.resnets.${j}`, h);
      if (type === 'CrossAttnUpBlock2D') h = transformer2d(c, `${name}.attentions.${j}`, h, upHeads[i]!);
    }
    if (i < n - 1) h = conv(c, `${name}.upsamplers.0.conv`, op.upsampleNearestTo(h, skips[skips.length - 1]!));
    debug(name, h);
  });

  h = groupNorm(c, 'conv_norm_out', h, c.eps);
  debug('conv_norm_out', h);
  g.output('out_sample', conv(c, 'conv_out', op.silu(h)));
  const unused = p.unused();
  if (unused.length) {
    throw new RedlineError('weight_unexpected', `UNet weights include ${unused.length} tensors the model does not use (first: ${unused[0]}).`, 'The weights do not match the UNet config.');
  }
  // Pre-packed GEMM weights: ~10% per step on the CPU; the compile cache keeps them packed,
  // so a cached load maps them (src/runtime/README.md, "Pre-packing").
  setGraphSessionDefaults(g, { prepack: true });
  return g;
}
