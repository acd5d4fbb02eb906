// Parameter-name tables between the diffusers layout and the original CompVis/LDM
// single-file layout of SD 1.5-family checkpoints, generated from the components' configs
// by the same rules as diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py
// (block numbering derived from layers_per_block and the block types, not hard-coded), so
// any width, depth or layer count of the family maps. Each entry also carries the shape the
// config implies, which lets loaders reject a file of another shape instead of half-loading
// it. The tables are data: loaders, the merger and the LoRA key matcher all read them.
import type { CLIPTextConfig, UNetConfig, VAEConfig } from './configs.ts';

export type Component = 'unet' | 'vae' | 'text_encoder';

export interface KeyMapEntry {
  /** diffusers parameter name (relative to the component). */
  diffusers: string;
  /** Full key in the original single-file checkpoint. */
  original: string;
  /** Shape in diffusers layout. */
  shape: number[];
  /** The original stores this Linear weight as a 1x1 conv, shape [...shape, 1, 1]. */
  conv1x1InOriginal?: true;
}

export const ORIGINAL_PREFIX: Record<Component, string> = {
  unet: 'model.diffusion_model.',
  vae: 'first_stage_model.',
  text_encoder: 'cond_stage_model.transformer.',
};

class Table {
  readonly entries: KeyMapEntry[] = [];
  constructor(private readonly origPrefix: string) {}

  param(d: string, o: string, shape: number[], conv1x1InOriginal = false): void {
    const e: KeyMapEntry = { diffusers: d, original: this.origPrefix + o, shape };
    if (conv1x1InOriginal) e.conv1x1InOriginal = true;
    this.entries.push(e);
  }
  norm(d: string, o: string, c: number): void {
    this.param(`${d}.weight`, `${o}.weight`, [c]);
    this.param(`${d}.bias`, `${o}.bias`, [c]);
  }
  conv(d: string, o: string, cout: number, cin: number, k: number): void {
    this.param(`${d}.weight`, `${o}.weight`, [cout, cin, k, k]);
    this.param(`${d}.bias`, `${o}.bias`, [cout]);
  }
  linear(d: string, o: string, out: number, inp: number, bias = true, conv1x1InOriginal = false): void {
    this.param(`${d}.weight`, `${o}.weight`, [out, inp], conv1x1InOriginal);
    if (bias) this.param(`${d}.bias`, `${o}.bias`, [out]);
  }
}

function perBlock(v: number | number[] | undefined, i: number, fallback: number): number {
  if (v === undefined || v === null) return fallback;
  return Array.isArray(v) ? (v[i] ?? fallback) : v;
}

function unetResnet(t: Table, d: string, o: string, cin: number, cout: number, temb: number): void {
  t.norm(`${d}.norm1`, `${o}.in_layers.0`, cin);
  t.conv(`${d}.conv1`, `${o}.in_layers.2`, cout, cin, 3);
  t.linear(`${d}.time_emb_proj`, `${o}.emb_layers.1`, cout, temb);
  t.norm(`${d}.norm2`, `${o}.out_layers.0`, cout);
  t.conv(`${d}.conv2`, `${o}.out_layers.3`, cout, cout, 3);
  if (cin !== cout) t.conv(`${d}.conv_shortcut`, `${o}.skip_connection`, cout, cin, 1);
}

function transformer2d(t: Table, d: string, o: string, c: number, cross: number, depth: number, linearProj: boolean): void {
  t.norm(`${d}.norm`, `${o}.norm`, c);
  const proj = (name: string): void => (linearProj ? t.linear(`${d}.${name}`, `${o}.${name}`, c, c) : t.conv(`${d}.${name}`, `${o}.${name}`, c, c, 1));
  proj('proj_in');
  for (let b = 0; b < depth; b++) {
    const bd = `${d}.transformer_blocks.${b}`;
    const bo = `${o}.transformer_blocks.${b}`;
    t.norm(`${bd}.norm1`, `${bo}.norm1`, c);
    for (const [attn, kv] of [['attn1', c], ['attn2', cross]] as const) {
      t.linear(`${bd}.${attn}.to_q`, `${bo}.${attn}.to_q`, c, c, false);
      t.linear(`${bd}.${attn}.to_k`, `${bo}.${attn}.to_k`, c, kv, false);
      t.linear(`${bd}.${attn}.to_v`, `${bo}.${attn}.to_v`, c, kv, false);
      t.linear(`${bd}.${attn}.to_out.0`, `${bo}.${attn}.to_out.0`, c, c);
      if (attn === 'attn1') t.norm(`${bd}.norm2`, `${bo}.norm2`, c);
    }
    t.norm(`${bd}.norm3`, `${bo}.norm3`, c);
    t.linear(`${bd}.ff.net.0.proj`, `${bo}.ff.net.0.proj`, 8 * c, c); // GEGLU: value and gate halves
    t.linear(`${bd}.ff.net.2`, `${bo}.ff.net.2`, c, 4 * c);
  }
  proj('proj_out');
}

/** UNet2DConditionModel (SD 1.x layout) <-> model.diffusion_model.* */
export function unetKeyMap(cfg: UNetConfig): KeyMapEntry[] {
  const t = new Table(ORIGINAL_PREFIX.unet);
  const boc = cfg.block_out_channels;
  const n = boc.length;
  const L = cfg.layers_per_block;
  const temb = boc[0]! * 4;
  const cross = cfg.cross_attention_dim;
  const linearProj = cfg.use_linear_projection === true;
  const depth = (i: number): number => perBlock(cfg.transformer_layers_per_block, i, 1);

  t.conv('conv_in', 'input_blocks.0.0', boc[0]!, cfg.in_channels, 3);
  t.linear('time_embedding.linear_1', 'time_embed.0', temb, boc[0]!);
  t.linear('time_embedding.linear_2', 'time_embed.2', temb, temb);

  let out = boc[0]!;
  for (let i = 0; i < n; i++) {
    const inp = out;
    out = boc[i]!;
    const attn = cfg.down_block_types[i]!.startsWith('CrossAttn');
    for (let j = 0; j < L; j++) {
      const idx = 1 + i * (L + 1) + j;
      unetResnet(t, `down_blocks.${i}.resnets.${j}`, `input_blocks.${idx}.0`, j === 0 ? inp : out, out, temb);
      if (attn) transformer2d(t, `down_blocks.${i}.attentions.${j}`, `input_blocks.${idx}.1`, out, cross, depth(i), linearProj);
    }
    if (i < n - 1) t.conv(`down_blocks.${i}.downsamplers.0.conv`, `input_blocks.${(i + 1) * (L + 1)}.0.op`, out, out, 3);
  }

  const mid = boc[n - 1]!;
  unetResnet(t, 'mid_block.resnets.0', 'middle_block.0', mid, mid, temb);
  transformer2d(t, 'mid_block.attentions.0', 'middle_block.1', mid, cross, depth(n - 1), linearProj);
  unetResnet(t, 'mid_block.resnets.1', 'middle_block.2', mid, mid, temb);

  const rev = [...boc].reverse();
  out = rev[0]!;
  for (let i = 0; i < n; i++) {
    const prev = out;
    out = rev[i]!;
    const inp = rev[Math.min(i + 1, n - 1)]!;
    const attn = cfg.up_block_types[i]!.startsWith('CrossAttn');
    for (let j = 0; j <= L; j++) {
      const idx = i * (L + 1) + j;
      const skip = j === L ? inp : out;
      const cin = (j === 0 ? prev : out) + skip;
      unetResnet(t, `up_blocks.${i}.resnets.${j}`, `output_blocks.${idx}.0`, cin, out, temb);
      if (attn) transformer2d(t, `up_blocks.${i}.attentions.${j}`, `output_blocks.${idx}.1`, out, cross, depth(n - 1 - i), linearProj);
    }
    if (i < n - 1) {
      t.conv(`up_blocks.${i}.upsamplers.0.conv`, `output_blocks.${i * (L + 1) + L}.${attn ? 2 : 1}.conv`, out, out, 3);
    }
  }

  t.norm('conv_norm_out', 'out.0', boc[0]!);
  t.conv('conv_out', 'out.2', cfg.out_channels, boc[0]!, 3);
  return t.entries;
}

function vaeResnet(t: Table, d: string, o: string, cin: number, cout: number): void {
  t.norm(`${d}.norm1`, `${o}.norm1`, cin);
  t.conv(`${d}.conv1`, `${o}.conv1`, cout, cin, 3);
  t.norm(`${d}.norm2`, `${o}.norm2`, cout);
  t.conv(`${d}.conv2`, `${o}.conv2`, cout, cout, 3);
  if (cin !== cout) t.conv(`${d}.conv_shortcut`, `${o}.nin_shortcut`, cout, cin, 1);
}

function vaeMid(t: Table, d: string, o: string, c: number, attention: boolean): void {
  vaeResnet(t, `${d}.mid_block.resnets.0`, `${o}.mid.block_1`, c, c);
  if (attention) {
    const a = `${d}.mid_block.attentions.0`;
    const oa = `${o}.mid.attn_1`;
    t.norm(`${a}.group_norm`, `${oa}.norm`, c);
    t.linear(`${a}.to_q`, `${oa}.q`, c, c, true, true);
    t.linear(`${a}.to_k`, `${oa}.k`, c, c, true, true);
    t.linear(`${a}.to_v`, `${oa}.v`, c, c, true, true);
    t.linear(`${a}.to_out.0`, `${oa}.proj_out`, c, c, true, true);
  }
  vaeResnet(t, `${d}.mid_block.resnets.1`, `${o}.mid.block_2`, c, c);
}

/** AutoencoderKL <-> first_stage_model.* */
export function vaeKeyMap(cfg: VAEConfig): KeyMapEntry[] {
  const t = new Table(ORIGINAL_PREFIX.vae);
  const boc = cfg.block_out_channels;
  const n = boc.length;
  const L = cfg.layers_per_block;
  const lat = cfg.latent_channels;
  const attention = cfg.mid_block_add_attention !== false;

  t.conv('encoder.conv_in', 'encoder.conv_in', boc[0]!, cfg.in_channels, 3);
  let out = boc[0]!;
  for (let i = 0; i < n; i++) {
    const inp = out;
    out = boc[i]!;
    for (let j = 0; j < L; j++) {
      vaeResnet(t, `encoder.down_blocks.${i}.resnets.${j}`, `encoder.down.${i}.block.${j}`, j === 0 ? inp : out, out);
    }
    if (i < n - 1) t.conv(`encoder.down_blocks.${i}.downsamplers.0.conv`, `encoder.down.${i}.downsample.conv`, out, out, 3);
  }
  vaeMid(t, 'encoder', 'encoder', boc[n - 1]!, attention);
  t.norm('encoder.conv_norm_out', 'encoder.norm_out', boc[n - 1]!);
  t.conv('encoder.conv_out', 'encoder.conv_out', 2 * lat, boc[n - 1]!, 3);
  if (cfg.use_quant_conv !== false) t.conv('quant_conv', 'quant_conv', 2 * lat, 2 * lat, 1);
  if (cfg.use_post_quant_conv !== false) t.conv('post_quant_conv', 'post_quant_conv', lat, lat, 1);

  const rev = [...boc].reverse();
  t.conv('decoder.conv_in', 'decoder.conv_in', rev[0]!, lat, 3);
  vaeMid(t, 'decoder', 'decoder', rev[0]!, attention);
  out = rev[0]!;
  for (let i = 0; i < n; i++) {
    const prev = out;
    out = rev[i]!;
    for (let j = 0; j <= L; j++) {
      vaeResnet(t, `decoder.up_blocks.${i}.resnets.${j}`, `decoder.up.${n - 1 - i}.block.${j}`, j === 0 ? prev : out, out);
    }
    if (i < n - 1) t.conv(`decoder.up_blocks.${i}.upsamplers.0.conv`, `decoder.up.${n - 1 - i}.upsample.conv`, out, out, 3);
  }
  t.norm('decoder.conv_norm_out', 'decoder.norm_out', boc[0]!);
  t.conv('decoder.conv_out', 'decoder.conv_out', cfg.out_channels, boc[0]!, 3);
  return t.entries;
}

/** CLIPTextModel (classic `text_model.*` names) <-> cond_stage_model.transformer.text_model.* */
export function textEncoderKeyMap(cfg: CLIPTextConfig): KeyMapEntry[] {
  const t = new Table(ORIGINAL_PREFIX.text_encoder);
  const h = cfg.hidden_size;
  const same = (name: string, shape: number[]): void => t.param(name, name, shape);
  same('text_model.embeddings.token_embedding.weight', [cfg.vocab_size, h]);
  same('text_model.embeddings.position_embedding.weight', [cfg.max_position_embeddings, h]);
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `text_model.encoder.layers.${l}`;
    for (const proj of ['k_proj', 'v_proj', 'q_proj', 'out_proj']) t.linear(`${p}.self_attn.${proj}`, `${p}.self_attn.${proj}`, h, h);
    t.norm(`${p}.layer_norm1`, `${p}.layer_norm1`, h);
    t.linear(`${p}.mlp.fc1`, `${p}.mlp.fc1`, cfg.intermediate_size, h);
    t.linear(`${p}.mlp.fc2`, `${p}.mlp.fc2`, h, cfg.intermediate_size);
    t.norm(`${p}.layer_norm2`, `${p}.layer_norm2`, h);
  }
  t.norm('text_model.final_layer_norm', 'text_model.final_layer_norm', h);
  return t.entries;
}

export function keyMapFor(component: Component, cfg: UNetConfig | VAEConfig | CLIPTextConfig): KeyMapEntry[] {
  switch (component) {
    case 'unet': return unetKeyMap(cfg as UNetConfig);
    case 'vae': return vaeKeyMap(cfg as VAEConfig);
    case 'text_encoder': return textEncoderKeyMap(cfg as CLIPTextConfig);
  }
}
