// AutoencoderKL (the SD 1.5 VAE) as graphs: an encoder (image in [-1, 1] -> latent mean
// and log-variance) and a decoder (latent -> image in [-1, 1]). Sizes come from the
// model's own diffusers config, so any SD 1.x-family VAE width or depth works. Weights are
// taken by diffusers parameter names.
import { Graph, GraphBuildError, type Value } from '../graph/graph.ts';
import { RedlineError } from '../errors.ts';
import { setGraphSessionDefaults } from '../runtime/compile.ts';
import type { Session } from '../runtime/session.ts';
import { Tensor } from '../tensor/tensor.ts';
import * as op from '../graph/ops.ts';
import type { VAEConfig } from './checkpoint/configs.ts';
import { bindParams, type ParamBinder, type WeightSource } from './weights.ts';

/** diffusers builds every VAE norm with eps 1e-6 (resnets, attention, conv_norm_out). */
const VAE_NORM_EPS = 1e-6;

// Row i of PHASE_TAPS[p] sums the 3x3 kernel taps that read input offset i - 1 + p for output
// phase p of a 2x nearest upsampling (0: even rows or columns, 1: odd).
const PHASE_TAPS = [
  [[1, 0, 0], [0, 1, 1]],
  [[1, 1, 0], [0, 0, 1]],
] as const;

/**
 * Conv2d(3x3, padding 1) of a 2x nearest-upsampled `x` (diffusers' Upsample2D), computed at
 * the input's resolution: the four pixels of each 2x2 output cell each read only 2x2
 * distinct input pixels, so they are four 2x2 convolutions of `x` whose kernels sum the 3x3
 * taps landing on the same input pixel (sums ORT folds once at load). That is 16
 * multiply-adds per input pixel and channel pair instead of 36, and the 4x larger upsampled
 * tensor is never materialised. Equal to upsample + conv up to float32 rounding of the tap
 * sums. `w` [Co, Ci, 3, 3], `b` [Co].
 */
export function upsampleConv3x3(x: Value, w: Value, b: Value): Value {
  if (w.rank !== 4 || w.shape[2] !== 3 || w.shape[3] !== 3) throw new GraphBuildError(`upsampleConv3x3: weight ${w} must be [Co, Ci, 3, 3]`);
  const g = x.graph;
  const rowTaps = PHASE_TAPS.map((m) => op.constant(g, w.dtype, m.flat(), [2, 3], 'upsample_row_taps'));
  const colTaps = PHASE_TAPS.map((m) => op.constant(g, w.dtype, [0, 1, 2].flatMap((j) => m.map((row) => row[j]!)), [3, 2], 'upsample_col_taps'));
  const phases: Value[] = [];
  for (let r = 0; r < 2; r++) {
    for (let c = 0; c < 2; c++) {
      const k = op.matmul(rowTaps[r]!, op.matmul(w, colTaps[c]!));
      // pads [top, left, bottom, right]: even phases read offsets -1..0, odd ones 0..+1
      phases.push(op.conv(x, k, b, { pads: [1 - r, 1 - c, r, c] }));
    }
  }
  // channel block 2r + c holds phase (r, c): DepthToSpace (DCR) interleaves them
  return op.depthToSpace(op.concat(phases, 1), 2);
}

class VaeBuilder {
  readonly param: ParamBinder;

  constructor(
    readonly g: Graph,
    readonly cfg: VAEConfig,
    weights: WeightSource,
  ) {
    this.param = bindParams(g, weights, 'VAE');
  }

  norm(x: Value, prefix: string): Value {
    return op.groupNorm(x, this.param(`${prefix}.weight`), this.param(`${prefix}.bias`), this.cfg.norm_num_groups, VAE_NORM_EPS);
  }

  conv(x: Value, prefix: string, pad: number, strides?: number[], pads?: number[]): Value {
    return op.conv(x, this.param(`${prefix}.weight`), this.param(`${prefix}.bias`), {
      pads: pads ?? [pad, pad, pad, pad],
      ...(strides ? { strides } : {}),
    });
  }

  resnet(x: Value, prefix: string): Value {
    let h = this.conv(op.silu(this.norm(x, `${prefix}.norm1`)), `${prefix}.conv1`, 1);
    h = this.conv(op.silu(this.norm(h, `${prefix}.norm2`)), `${prefix}.conv2`, 1);
    const shortcut = this.param.has(`${prefix}.conv_shortcut.weight`) ? this.conv(x, `${prefix}.conv_shortcut`, 0) : x;
    return op.add(shortcut, h);
  }

  /** Single-head self-attention over all pixels (the VAE's mid block). */
  attention(x: Value, prefix: string): Value {
    const c = x.shape[1] as number;
    const h = op.transpose(op.reshape(this.norm(x, `${prefix}.group_norm`), [0, c, -1]), [0, 2, 1]);
    const lin = (name: string): Value => op.linear(h, this.param(`${prefix}.${name}.weight`), this.param(`${prefix}.${name}.bias`));
    const a = op.multiHeadAttention(lin('to_q'), lin('to_k'), lin('to_v'), 1);
    const o = op.linear(a, this.param(`${prefix}.to_out.0.weight`), this.param(`${prefix}.to_out.0.bias`));
    return op.add(op.reshapeLike(op.transpose(o, [0, 2, 1]), x), x);
  }

  midBlock(x: Value, prefix: string): Value {
    let h = this.resnet(x, `${prefix}.resnets.0`);
    if (this.cfg.mid_block_add_attention !== false) h = this.attention(h, `${prefix}.attentions.0`);
    return this.resnet(h, `${prefix}.resnets.1`);
  }

  tail(x: Value, prefix: string): Value {
    return this.conv(op.silu(this.norm(x, `${prefix}.conv_norm_out`)), `${prefix}.conv_out`, 1);
  }
}

/** Encoder graph: input `image` [B, 3, H, W] in [-1, 1]; outputs `mean` and `logvar`
 * [B, 4, H/8, W/8] (logvar clamped to [-30, 20] as diffusers' DiagonalGaussianDistribution). */
export function buildVaeEncoder(cfg: VAEConfig, weights: WeightSource): Graph {
  const g = new Graph('vae_encoder');
  const b = new VaeBuilder(g, cfg, weights);
  const image = g.input('image', 'f32', ['batch', cfg.in_channels, 'height', 'width']);
  let h = b.conv(image, 'encoder.conv_in', 1);
  const levels = cfg.block_out_channels.length;
  for (let i = 0; i < levels; i++) {
    for (let j = 0; j < cfg.layers_per_block; j++) h = b.resnet(h, `encoder.down_blocks.${i}.resnets.${j}`);
    // diffusers' Downsample2D(padding=0) pads right and bottom by one, then strides by 2
    if (i < levels - 1) h = b.conv(h, `encoder.down_blocks.${i}.downsamplers.0.conv`, 0, [2, 2], [0, 0, 1, 1]);
  }
  h = b.midBlock(h, 'encoder.mid_block');
  h = b.tail(h, 'encoder');
  if (cfg.use_quant_conv !== false) h = b.conv(h, 'quant_conv', 0);
  const z = cfg.latent_channels;
  const mean = op.slice(h, [0], [z], [1]);
  const logvarRaw = op.slice(h, [z], [2 * z], [1]);
  const logvar = g.addNode('Clip', [logvarRaw, op.constant(g, 'f32', [-30], []), op.constant(g, 'f32', [20], [])], [
    { dtype: 'f32', shape: logvarRaw.shape },
  ])[0]!;
  g.output('mean', mean);
  g.output('logvar', logvar);
  return g;
}

/** Decoder graph: input `latent` [B, 4, h, w] (already divided by the scaling factor);
 * output `image` [B, 3, 8h, 8w] in about [-1, 1]. */
export function buildVaeDecoder(cfg: VAEConfig, weights: WeightSource): Graph {
  const g = new Graph('vae_decoder');
  const b = new VaeBuilder(g, cfg, weights);
  const latent = g.input('latent', 'f32', ['batch', cfg.latent_channels, 'height', 'width']);
  let h = cfg.use_post_quant_conv !== false ? b.conv(latent, 'post_quant_conv', 0) : latent;
  h = b.conv(h, 'decoder.conv_in', 1);
  h = b.midBlock(h, 'decoder.mid_block');
  const levels = cfg.block_out_channels.length;
  for (let i = 0; i < levels; i++) {
    for (let j = 0; j <= cfg.layers_per_block; j++) h = b.resnet(h, `decoder.up_blocks.${i}.resnets.${j}`);
    if (i < levels - 1) {
      const p = `decoder.up_blocks.${i}.upsamplers.0.conv`;
      h = upsampleConv3x3(h, b.param(`${p}.weight`), b.param(`${p}.bias`));
    }
  }
  g.output('image', b.tail(h, 'decoder'));
  // ORT reserves its memory-pattern block outside the arena and maps it afresh on the first
  // runs of a session: ~240k page faults (~3.6 CPU s here) per 512x512 decode. From the
  // arena, the memory is kept after the first decode, and peak RSS is 0.6 GB lower.
  setGraphSessionDefaults(g, { memPattern: false });
  return g;
}

export interface TiledDecodeOptions {
  /** Latent tile size (default as diffusers: sample_size / 2^(levels - 1), 64 for SD 1.5). */
  tileLatent?: number;
  /** Fraction of a tile shared with its neighbour (default 0.25, as diffusers). */
  overlap?: number;
}

/**
 * Tiled decoding, as diffusers' `AutoencoderKL.tiled_decode` (`vae.enable_tiling()`) does it:
 * latent tiles of `tileLatent` at a stride of `tileLatent * (1 - overlap)`, each decoded on its
 * own (peak memory of one tile, whatever the image size), neighbours blended linearly over
 * `overlap` of a tile. Latents no larger than a tile decode in one piece, unchanged. Tiled
 * results differ from a whole decode (group norms see one tile's statistics), as in diffusers.
 * `decoder`: a session of buildVaeDecoder; `latent` [B, C, h, w] already divided by the scaling
 * factor. Returns the image [B, out_channels, 8h, 8w] (8: 2^(levels - 1)).
 */
export async function decodeTiled(decoder: Session, latent: Tensor, cfg: VAEConfig, opts: TiledDecodeOptions = {}): Promise<Tensor> {
  if (latent.dtype !== 'f32' || latent.shape.length !== 4) {
    throw new RedlineError('model_input', `latents must be f32 [batch, ${cfg.latent_channels}, h, w], got ${latent.dtype} [${latent.shape.join(', ')}].`);
  }
  const [batch, channels, h, w] = latent.shape as [number, number, number, number];
  // image pixels per latent pixel: one 2x upsampler per level but the last
  const factor = 2 ** (cfg.block_out_channels.length - 1);
  const sampleSize = Array.isArray(cfg.sample_size) ? (cfg.sample_size[0] as number) : ((cfg.sample_size as number | undefined) ?? 512);
  const tileLatent = opts.tileLatent ?? Math.floor(sampleSize / factor);
  const tileSample = opts.tileLatent !== undefined ? tileLatent * factor : sampleSize;
  const overlap = opts.overlap ?? 0.25;
  if (!Number.isInteger(tileLatent) || tileLatent < 1) throw new RedlineError('model_input', `VAE tile size ${tileLatent} must be a positive whole number of latent pixels.`);
  if (!(overlap >= 0 && overlap < 1)) throw new RedlineError('model_input', `VAE tile overlap ${overlap} must be at least 0 and below 1.`);
  const decode = async (z: Tensor): Promise<Tensor> => (await decoder.run({ latent: z }, ['image'])).image!;
  if (h <= tileLatent && w <= tileLatent) return decode(latent);

  const stride = Math.floor(tileLatent * (1 - overlap));
  const blendExtent = Math.floor(tileSample * overlap);
  const rowLimit = tileSample - blendExtent;
  const src = latent.data as Float32Array;
  const rows: Tile[][] = [];
  for (let i = 0; i < h; i += stride) {
    const row: Tile[] = [];
    for (let j = 0; j < w; j += stride) {
      const th = Math.min(tileLatent, h - i);
      const tw = Math.min(tileLatent, w - j);
      const z = new Float32Array(batch * channels * th * tw);
      for (let bc = 0; bc < batch * channels; bc++) {
        for (let y = 0; y < th; y++) z.set(src.subarray(bc * h * w + (i + y) * w + j, bc * h * w + (i + y) * w + j + tw), (bc * th + y) * tw);
      }
      const image = await decode(new Tensor('f32', [batch, channels, th, tw], z));
      const [, oc, oh, ow] = image.shape as [number, number, number, number];
      row.push({ data: image.data as Float32Array, planes: batch * oc, h: oh, w: ow });
    }
    rows.push(row);
  }
  const outChannels = rows[0]![0]!.planes / batch;
  const H = rows.reduce((n, row) => n + Math.min(rowLimit, row[0]!.h), 0);
  const W = rows[0]!.reduce((n, tile) => n + Math.min(rowLimit, tile.w), 0);
  if (H !== factor * h || W !== factor * w) {
    throw new RedlineError('model_input', `VAE tiles of ${tileLatent} with overlap ${overlap} do not cover a ${h}x${w} latent exactly (${H}x${W} pixels instead of ${factor * h}x${factor * w}).`, 'Use the default tiling, or a tile size and overlap whose stride times the upscale factor equals the kept part of a tile.');
  }
  const out = new Float32Array(batch * outChannels * H * W);
  let y0 = 0;
  rows.forEach((row, i) => {
    let x0 = 0;
    let rowHeight = 0;
    row.forEach((tile, j) => {
      // in place, as diffusers: later blends read the already blended neighbours
      if (i > 0) blendEdge(rows[i - 1]![j]!, tile, blendExtent, true);
      if (j > 0) blendEdge(row[j - 1]!, tile, blendExtent, false);
      const ch = Math.min(rowLimit, tile.h);
      const cw = Math.min(rowLimit, tile.w);
      for (let p = 0; p < tile.planes; p++) {
        for (let y = 0; y < ch; y++) out.set(tile.data.subarray((p * tile.h + y) * tile.w, (p * tile.h + y) * tile.w + cw), (p * H + y0 + y) * W + x0);
      }
      x0 += cw;
      rowHeight = ch;
    });
    y0 += rowHeight;
  });
  return new Tensor('f32', [batch, outChannels, H, W], out);
}

interface Tile {
  data: Float32Array;
  /** batch * channels */
  planes: number;
  h: number;
  w: number;
}

/**
 * b's first rows (`down`: a is above b) or columns (a is left of b) fade in from a's last
 * ones: diffusers' blend_v and blend_h, in float32.
 */
function blendEdge(a: Tile, b: Tile, extent: number, down: boolean): void {
  const e = Math.min(down ? a.h : a.w, down ? b.h : b.w, extent);
  const from = (down ? a.h : a.w) - e;
  const across = down ? b.w : b.h;
  // Element (plane p, i-th row or column across the seam, k-th along it) of a tile.
  const at = (t: Tile, p: number, i: number, k: number): number => (down ? (p * t.h + i) * t.w + k : (p * t.h + k) * t.w + i);
  for (let i = 0; i < e; i++) {
    const wa = Math.fround(1 - i / e);
    const wb = Math.fround(i / e);
    for (let p = 0; p < b.planes; p++) {
      for (let k = 0; k < across; k++) {
        const ib = at(b, p, i, k);
        b.data[ib] = Math.fround(Math.fround(a.data[at(a, p, from + i, k)]! * wa) + Math.fround(b.data[ib]! * wb));
      }
    }
  }
}
