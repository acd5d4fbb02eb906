// diffusers' StableDiffusionSafetyChecker as an optional extra output check, for operators
// who provide its weights (safety_checker/model.safetensors of an SD 1.5 repository): a CLIP
// vision tower + visual projection, whose image embedding is compared by cosine with 17
// concept and 3 "special care" embeddings against per-concept thresholds stored in the
// same file. The decision follows StableDiffusionSafetyChecker.forward exactly: scores
// rounded to 3 decimals, and once a special-care concept fires, 0.01 is added to every later
// score (special and regular), which makes all concepts easier to trigger.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { RedlineError } from '../../errors.ts';
import { Graph, type Value } from '../../graph/graph.ts';
import * as op from '../../graph/ops.ts';
import { MappedWeightSource, type StoredTensor } from '../../models/checkpoint/weight-source.ts';
import { bindParams, type ParamBinder, type WeightSource } from '../../models/weights.ts';
import { compileGraph } from '../../runtime/compile.ts';
import type { Session } from '../../runtime/session.ts';
import { SafetensorsFile } from '../../tensor/safetensors.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { assertRgbImage, type RgbImage } from './image.ts';

/** transformers CLIPVisionConfig fields the model needs (+ the projection size). */
export interface SafetyCheckerConfig {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  patch_size: number;
  image_size: number;
  projection_dim: number;
  layer_norm_eps: number;
  hidden_act: 'quick_gelu' | 'gelu';
}

const PREFIX = 'vision_model.vision_model';

/** CLIPImageProcessor defaults used by the SD pipelines' feature_extractor. */
export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;

export interface ConceptWeights {
  concept: Float32Array; // [nConcepts, projection]
  conceptThresholds: Float32Array;
  special: Float32Array; // [nSpecial, projection]
  specialThresholds: Float32Array;
}

export interface SafetyCheckerScores {
  /** Rounded score per special-care concept (> 0 fired). */
  specialScores: number[];
  /** Rounded score per concept (> 0 fired), after the special-care adjustment. */
  conceptScores: number[];
  specialCare: number[];
  badConcepts: number[];
  /** diffusers' has_nsfw_concept. */
  nsfw: boolean;
}

/** numpy's round(x, 3): round half to even on x * 1000. */
function round3(x: number): number {
  const y = x * 1000;
  const r = Math.round(y);
  const even = Math.abs(y % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  return even / 1000;
}

function normalizeRows(m: Float32Array, dim: number): Float64Array {
  const out = new Float64Array(m.length);
  for (let r = 0; r < m.length / dim; r++) {
    let n = 0;
    for (let i = 0; i < dim; i++) n += m[r * dim + i]! ** 2;
    // torch.nn.functional.normalize: x / max(||x||, 1e-12)
    const s = 1 / Math.max(Math.sqrt(n), 1e-12);
    for (let i = 0; i < dim; i++) out[r * dim + i] = m[r * dim + i]! * s;
  }
  return out;
}

/** The decision of StableDiffusionSafetyChecker.forward for one image embedding. */
export function safetyCheckerScores(imageEmbed: Float32Array, w: ConceptWeights): SafetyCheckerScores {
  const dim = imageEmbed.length;
  const img = normalizeRows(imageEmbed, dim);
  // torch computes the cosine in float32 and hands it over as float32 numpy values.
  const cos = (bank: Float32Array, row: number): number => {
    const b = normalizeRows(bank.subarray(row * dim, (row + 1) * dim), dim);
    let s = 0;
    for (let i = 0; i < dim; i++) s += img[i]! * b[i]!;
    return Math.fround(s);
  };
  const specialScores: number[] = [];
  const specialCare: number[] = [];
  const conceptScores: number[] = [];
  const badConcepts: number[] = [];
  let adjustment = 0;
  for (let i = 0; i < w.specialThresholds.length; i++) {
    const score = round3(cos(w.special, i) - w.specialThresholds[i]! + adjustment);
    specialScores.push(score);
    if (score > 0) {
      specialCare.push(i);
      adjustment = 0.01;
    }
  }
  for (let i = 0; i < w.conceptThresholds.length; i++) {
    const score = round3(cos(w.concept, i) - w.conceptThresholds[i]! + adjustment);
    conceptScores.push(score);
    if (score > 0) badConcepts.push(i);
  }
  return { specialScores, conceptScores, specialCare, badConcepts, nsfw: badConcepts.length > 0 };
}

function activation(name: string, x: Value): Value {
  if (name === 'quick_gelu') return op.quickGelu(x);
  if (name === 'gelu') return op.gelu(x);
  throw new RedlineError('config_unsupported', `safety checker activation "${name}" is not supported.`, 'The SD safety checker uses quick_gelu.');
}

function encoderLayer(p: ParamBinder, prefix: string, x: Value, cfg: SafetyCheckerConfig): Value {
  const h = cfg.hidden_size;
  const lin = (name: string, v: Value, out: number, inp: number): Value => op.linear(v, p(`${prefix}.${name}.weight`, [out, inp]), p(`${prefix}.${name}.bias`, [out]));
  const ln = (name: string, v: Value): Value => op.layerNorm(v, p(`${prefix}.${name}.weight`, [h]), p(`${prefix}.${name}.bias`, [h]), cfg.layer_norm_eps);
  let y = ln('layer_norm1', x);
  y = op.multiHeadAttention(lin('self_attn.q_proj', y, h, h), lin('self_attn.k_proj', y, h, h), lin('self_attn.v_proj', y, h, h), cfg.num_attention_heads);
  const mid = op.add(x, lin('self_attn.out_proj', y, h, h));
  const m = activation(cfg.hidden_act, lin('mlp.fc1', ln('layer_norm2', mid), cfg.intermediate_size, h));
  return op.add(mid, lin('mlp.fc2', m, h, cfg.intermediate_size));
}

/** CLIPVisionModel pooled output -> visual_projection. Input pixel_values f32 [1, 3, S, S]; output image_embeds [1, projection]. */
export function buildSafetyCheckerGraph(cfg: SafetyCheckerConfig, weights: WeightSource): Graph {
  const g = new Graph('sd_safety_checker');
  const p = bindParams(g, weights, 'safety checker');
  const { hidden_size: h, patch_size: ps, image_size: s } = cfg;
  if (s % ps !== 0) throw new RedlineError('config_unsupported', `safety checker image size ${s} is not a multiple of its patch size ${ps}.`);
  const grid = s / ps;
  const positions = grid * grid + 1;
  const pixels = g.input('pixel_values', 'f32', [1, 3, s, s]);
  const patches = op.conv(pixels, p(`${PREFIX}.embeddings.patch_embedding.weight`, [h, 3, ps, ps]), null, { strides: [ps, ps] });
  const tokens = op.transpose(op.reshape(patches, [1, h, grid * grid]), [0, 2, 1]);
  const cls = op.reshape(p(`${PREFIX}.embeddings.class_embedding`, [h]), [1, 1, h]);
  let x = op.add(op.concat([cls, tokens], 1), op.reshape(p(`${PREFIX}.embeddings.position_embedding.weight`, [positions, h]), [1, positions, h]));
  const ln = (name: string, v: Value): Value => op.layerNorm(v, p(`${PREFIX}.${name}.weight`, [h]), p(`${PREFIX}.${name}.bias`, [h]), cfg.layer_norm_eps);
  x = ln('pre_layrnorm', x);
  for (let i = 0; i < cfg.num_hidden_layers; i++) x = encoderLayer(p, `${PREFIX}.encoder.layers.${i}`, x, cfg);
  const pooled = ln('post_layernorm', op.reshape(op.slice(x, [0], [1], [1]), [1, h]));
  g.output('image_embeds', op.linear(pooled, p('visual_projection.weight', [cfg.projection_dim, h])));
  return g;
}

/**
 * CLIPImageProcessor as the SD pipelines use it: shortest side to `size` (bicubic), centre
 * crop, scale to 0..1, normalise with the CLIP mean/std, NCHW. sharp's cubic resize is not
 * bit-identical to PIL's, so scores can differ from diffusers in the third decimal.
 */
export async function clipPixelValues(image: RgbImage, size: number): Promise<Float32Array> {
  assertRgbImage(image);
  const { width, height } = image;
  const scale = size / Math.min(width, height);
  const rw = Math.max(size, Math.round(width * scale));
  const rh = Math.max(size, Math.round(height * scale));
  const resized = await sharp(image.data, { raw: { width, height, channels: 3 } })
    .resize(rw, rh, { kernel: 'cubic', fit: 'fill' })
    .extract({ left: Math.floor((rw - size) / 2), top: Math.floor((rh - size) / 2), width: size, height: size })
    .raw()
    .toBuffer();
  const out = new Float32Array(3 * size * size);
  for (let i = 0; i < size * size; i++) {
    for (let c = 0; c < 3; c++) out[c * size * size + i] = (resized[i * 3 + c]! / 255 - CLIP_MEAN[c]!) / CLIP_STD[c]!;
  }
  return out;
}

function readConfig(weightsPath: string, file: SafetensorsFile, configPath?: string): SafetyCheckerConfig {
  const shape = (key: string): number[] => {
    if (!file.keys().includes(key)) {
      throw new RedlineError('safety_checker_weights', `${weightsPath} has no tensor "${key}"; it is not a diffusers StableDiffusionSafetyChecker file.`, 'Pass safety_checker/model.safetensors from an SD 1.5 repository.');
    }
    return file.info(key).shape;
  };
  const [h, , ps] = shape(`${PREFIX}.embeddings.patch_embedding.weight`) as [number, number, number];
  const positions = shape(`${PREFIX}.embeddings.position_embedding.weight`)[0]!;
  const layers = new Set(file.keys().map((k) => /encoder\.layers\.(\d+)\./.exec(k)?.[1]).filter((x) => x !== undefined)).size;
  const cfg: SafetyCheckerConfig = {
    hidden_size: h,
    intermediate_size: shape(`${PREFIX}.encoder.layers.0.mlp.fc1.weight`)[0]!,
    num_hidden_layers: layers,
    // CLIP towers use 64-wide heads (ViT-L/14: 1024 / 64 = 16).
    num_attention_heads: h / 64,
    patch_size: ps,
    image_size: Math.round(Math.sqrt(positions - 1)) * ps,
    projection_dim: shape('visual_projection.weight')[0]!,
    layer_norm_eps: 1e-5,
    hidden_act: 'quick_gelu',
  };
  const cfgFile = configPath ?? join(dirname(weightsPath), 'config.json');
  if (existsSync(cfgFile)) {
    const vision = (JSON.parse(readFileSync(cfgFile, 'utf8')) as { vision_config?: Partial<SafetyCheckerConfig> }).vision_config ?? {};
    if (vision.num_attention_heads) cfg.num_attention_heads = vision.num_attention_heads;
    if (vision.layer_norm_eps) cfg.layer_norm_eps = vision.layer_norm_eps;
    if (vision.hidden_act) cfg.hidden_act = vision.hidden_act;
  } else if (configPath) {
    throw new RedlineError('file_not_found', `Safety checker config ${configPath} does not exist.`);
  }
  if (!Number.isInteger(cfg.num_attention_heads) || cfg.num_attention_heads < 1) {
    throw new RedlineError('safety_checker_weights', `Cannot tell the attention head count of ${weightsPath} (hidden size ${h}).`, 'Put the safety checker config.json next to the weights.');
  }
  return cfg;
}

export class SdSafetyChecker {
  private constructor(
    readonly config: SafetyCheckerConfig,
    private readonly session: Session,
    private readonly concepts: ConceptWeights,
  ) {}

  /** `configPath` defaults to config.json beside the weights, as in a diffusers folder. */
  static async load(weightsPath: string, configPath?: string): Promise<SdSafetyChecker> {
    const file = SafetensorsFile.open(weightsPath);
    const cfg = readConfig(weightsPath, file, configPath);
    const entries = new Map<string, StoredTensor>();
    for (const key of file.keys()) entries.set(key, { file, key, shape: file.info(key).shape });
    const source = new MappedWeightSource(`safety checker ${weightsPath}`, entries);
    const session = await compileGraph(buildSafetyCheckerGraph(cfg, source));
    const f32 = (key: string): Float32Array => {
      if (!file.keys().includes(key)) throw new RedlineError('safety_checker_weights', `${weightsPath} has no tensor "${key}".`);
      return file.getFloat32(key);
    };
    const concepts = {
      concept: f32('concept_embeds'),
      conceptThresholds: f32('concept_embeds_weights'),
      special: f32('special_care_embeds'),
      specialThresholds: f32('special_care_embeds_weights'),
    };
    if (concepts.concept.length !== concepts.conceptThresholds.length * cfg.projection_dim || concepts.special.length !== concepts.specialThresholds.length * cfg.projection_dim) {
      throw new RedlineError('safety_checker_weights', `${weightsPath}: concept embeddings do not match the projection size ${cfg.projection_dim}.`);
    }
    return new SdSafetyChecker(cfg, session, concepts);
  }

  async embed(pixelValues: Float32Array): Promise<Float32Array> {
    const s = this.config.image_size;
    const out = await this.session.run({ pixel_values: new Tensor('f32', [1, 3, s, s], pixelValues) });
    return out.image_embeds!.toFloat32();
  }

  async check(image: RgbImage): Promise<SafetyCheckerScores> {
    return safetyCheckerScores(await this.embed(await clipPixelValues(image, this.config.image_size)), this.concepts);
  }
}
