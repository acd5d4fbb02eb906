// Training-step graphs: forward (text encoder -> UNet, or VAE decoder), the loss, and the
// gradient of every trainable tensor, as one Graph (one ORT run per step).
//
// LoRA is applied PEFT-style to the targeted Linear / conv weights (1x1, and 3x3 for LoCon) as
// W_eff = W + (alpha/rank) · reshape(B @ A) (the merged form PEFT's forward equals), with A
// and B graph inputs fed from the optimizer's arrays each step and the base frozen.

import { RedlineError } from '../../errors.ts';
import { gradients } from '../../graph/autodiff.ts';
import { Graph, type Node, type TensorSource, type Value } from '../../graph/graph.ts';
import * as op from '../../graph/ops.ts';
import type { SD15Configs } from '../../models/checkpoint/configs.ts';
import type { WeightSource } from '../../models/weights.ts';
import { buildTextEncoder } from '../../models/text-encoder.ts';
import { buildUnet } from '../../models/unet.ts';
import { buildVaeDecoder } from '../../models/vae.ts';
import { copyGraph } from './compose.ts';

/** The parts of an opened checkpoint a step needs (`openCheckpoint(...)` fits). */
export interface StepModel {
  configs: SD15Configs;
  components: { unet: WeightSource; text_encoder: WeightSource; vae: WeightSource };
}

export interface LoraTarget {
  /** PEFT module key: 'unet.<module>' or 'text_encoder.<module>' (params are
   * '<key>.lora_A.weight' and '<key>.lora_B.weight'). */
  key: string;
  component: 'unet' | 'text_encoder';
  /** Weight name inside the component ('<module>.weight'). */
  weight: string;
  /** Shape of the base weight ([out, in] or [out, in, kh, kw]). */
  shape: number[];
  rank: number;
  alpha: number;
}

export interface ParamSpec {
  name: string;
  shape: number[];
}

/** What a step graph computes; `graph` has inputs `feeds` + `params`, outputs 'loss' and
 * 'grad.<param>' (+ 'model_pred' / 'decoded'). */
export interface StepGraph {
  graph: Graph;
  kind: 'lora' | 'unet_full' | 'vae_decoder';
  /** Trainable tensors, in the order of `grad.*` outputs. */
  params: ParamSpec[];
  /** Per-step data inputs (names of graph inputs). */
  feeds: string[];
  /** Extra tensors whose gradients are output as 'grad.<name>' (e.g. noisy_latents). */
  inputGrads: string[];
}

export type CheckpointMode = 'none' | 'blocks' | 'modules';

export interface DiffusionStepOptions {
  /** Add a per-sample `loss_weights` [batch] input (min-SNR-gamma, prior-loss weight). */
  lossWeights?: boolean;
  /** Recompute activations in the backward pass: per UNet block ('blocks': down_blocks.i,
   * mid_block, up_blocks.i) or per resnet/transformer module ('modules'). */
  checkpoint?: CheckpointMode;
  /** Text encoder output used as encoder states (A1111 clip skip; 1 = last layer). */
  clipSkip?: number;
  /** 'in-graph': input_ids go in and the text encoder runs in the step (needed when it
   * has LoRA); 'input': encoder_hidden_states are fed (cached text-encoder outputs). */
  textEncoder?: 'in-graph' | 'input';
  /** Also output gradients w.r.t. these inputs ('noisy_latents', 'encoder_hidden_states'). */
  inputGrads?: readonly ('noisy_latents' | 'encoder_hidden_states')[];
  /** Also output the UNet prediction as 'model_pred'. */
  modelPred?: boolean;
  /** Build for one batch size and latent size (an aspect bucket) instead of free dims.
   * ORT plans memory for a fixed-shape training graph much faster (seconds, not a minute)
   * and reuses buffers exactly; a session per bucket. */
  fixed?: { batch: number; height: number; width: number };
}

const UNET_BLOCK = /^((?:down|up)_blocks\.\d+|mid_block)\./;
const UNET_MODULE = /^((?:(?:down|up)_blocks\.\d+|mid_block)\.(?:resnets|attentions)\.\d+)\./;

function segmenter(mode: CheckpointMode | undefined, origin: Map<Node, string>): ((n: Node) => string | undefined) | undefined {
  if (!mode || mode === 'none') return undefined;
  const re = mode === 'blocks' ? UNET_BLOCK : UNET_MODULE;
  return (n) => {
    const o = origin.get(n);
    const m = o ? re.exec(o) : null;
    return m ? m[1] : undefined;
  };
}

function loraDelta(g: Graph, t: LoraTarget, w: Value): { delta: Value; a: Value; b: Value } {
  const [out, ...rest] = t.shape as [number, ...number[]];
  const fanIn = rest.reduce((p, q) => p * q, 1);
  const conv = t.shape.length === 4;
  const aShape = conv ? [t.rank, t.shape[1]!, t.shape[2]!, t.shape[3]!] : [t.rank, fanIn];
  const bShape = conv ? [out, t.rank, 1, 1] : [out, t.rank];
  const a = g.input(`${t.key}.lora_A.weight`, 'f32', aShape);
  const b = g.input(`${t.key}.lora_B.weight`, 'f32', bShape);
  let delta = op.matmul(conv ? op.reshape(b, [out, t.rank]) : b, conv ? op.reshape(a, [t.rank, fanIn]) : a);
  if (conv) delta = op.reshape(delta, t.shape);
  const scale = t.alpha / t.rank;
  if (scale !== 1) delta = op.mul(delta, scale);
  if (w.shape.length !== t.shape.length || w.shape.some((d, i) => d !== t.shape[i])) {
    throw new RedlineError('lora_target', `LoRA target ${t.key} expects a weight of shape [${t.shape.join(', ')}], the model has ${w}.`);
  }
  return { delta, a, b };
}

/** mean_b(w_b · mean((pred_b − target_b)²)); w = 1 without `weights` [batch]. */
export function weightedMse(pred: Value, target: Value, weights: Value | null): Value {
  const d = op.sub(pred, target);
  const axes = pred.shape.map((_, i) => i).slice(1);
  let per = op.reduceMean(op.mul(d, d), axes, false); // [batch]
  if (weights) per = op.mul(per, weights);
  return op.reduceMean(per, [0], false);
}

function mseLoss(g: Graph, pred: Value, target: Value, weights: Value | null): Value {
  const loss = weightedMse(pred, target, weights);
  g.output('loss', loss);
  return loss;
}

interface UnetWiring {
  g: Graph;
  weight?: (component: 'unet' | 'text_encoder', name: string, source: TensorSource) => Value | undefined;
}

function diffusionForward(model: StepModel, w: UnetWiring, opts: DiffusionStepOptions): { pred: Value; feeds: string[]; origin: Map<Node, string>; inputs: Record<string, Value> } {
  const { g } = w;
  const unetCfg = model.configs.unet;
  const fx = opts.fixed;
  const batch = fx?.batch ?? 'batch';
  const noisy = g.input('noisy_latents', 'f32', [batch, unetCfg.in_channels, fx?.height ?? 'height', fx?.width ?? 'width']);
  const timestep = g.input('timestep', 'f32', [batch]);
  const inputs: Record<string, Value> = { noisy_latents: noisy, timestep };
  let states: Value;
  const feeds = ['noisy_latents', 'timestep'];
  if ((opts.textEncoder ?? 'in-graph') === 'in-graph') {
    const teCfg = model.configs.text_encoder;
    const ids = g.input('input_ids', 'i64', [batch, teCfg.max_position_embeddings]);
    feeds.push('input_ids');
    const skip = opts.clipSkip ?? 1;
    if (!Number.isInteger(skip) || skip < 1 || skip > teCfg.num_hidden_layers) {
      throw new RedlineError('train_config', `clip skip ${skip} is outside 1..${teCfg.num_hidden_layers}.`);
    }
    const te = buildTextEncoder(teCfg, model.components.text_encoder, { maxClipSkip: skip });
    const outName = skip === 1 ? 'last_hidden_state' : `clip_skip_${skip}`;
    states = copyGraph(g, te, {
      prefix: 'text_encoder.',
      inputs: { input_ids: ids },
      outputs: [outName],
      weight: (name, src) => w.weight?.('text_encoder', name, src),
    }).outputs[outName]!;
  } else {
    states = g.input('encoder_hidden_states', 'f32', [batch, fx ? model.configs.text_encoder.max_position_embeddings : 'sequence', unetCfg.cross_attention_dim]);
    feeds.push('encoder_hidden_states');
    inputs.encoder_hidden_states = states;
  }
  const unet = buildUnet(unetCfg, model.components.unet);
  const copied = copyGraph(g, unet, {
    prefix: 'unet.',
    inputs: { sample: noisy, timestep, encoder_hidden_states: states },
    outputs: ['out_sample'],
    weight: (name, src) => w.weight?.('unet', name, src),
  });
  const pred = copied.outputs.out_sample!;
  if (opts.modelPred) g.output('model_pred', pred);
  return { pred, feeds, origin: copied.origin, inputs };
}

function finish(g: Graph, loss: Value, params: Value[], extra: Value[], opts: DiffusionStepOptions, origin: Map<Node, string>): void {
  const seg = segmenter(opts.checkpoint, origin);
  const grads = gradients(loss, [...params, ...extra], seg ? { checkpoint: seg } : {});
  [...params, ...extra].forEach((p, i) => g.output(`grad.${p.name}`, grads[i]!));
}

/** LoRA step on UNet (+ text encoder when targets include it): inputs noisy_latents,
 * timestep (f32), input_ids, target, [loss_weights], and every '<key>.lora_{A,B}.weight'. */
export function buildLoraStep(model: StepModel, targets: readonly LoraTarget[], opts: DiffusionStepOptions = {}): StepGraph {
  if (targets.length === 0) throw new RedlineError('train_config', 'No LoRA target modules were selected.', 'Check the target module setting.');
  const g = new Graph('lora_step');
  const byWeight = new Map(targets.map((t) => [`${t.component}.${t.weight}`, t]));
  if (targets.some((t) => t.component === 'text_encoder') && opts.textEncoder === 'input') {
    throw new RedlineError('train_config', 'Text-encoder LoRA targets need the text encoder in the step graph.', "Use textEncoder: 'in-graph' or drop the text-encoder targets.");
  }
  const params: Value[] = [];
  const used = new Set<string>();
  const { pred, feeds, origin, inputs } = diffusionForward(model, {
    g,
    weight: (component, name, source) => {
      const t = byWeight.get(name);
      if (!t) return undefined;
      used.add(name);
      const base = g.weight(name, source);
      const baseF32 = base.dtype === 'f32' ? base : op.cast(base, 'f32');
      const { delta, a, b } = loraDelta(g, t, baseF32);
      params.push(a, b);
      return op.add(baseF32, delta);
    },
  }, opts);
  const missing = targets.filter((t) => !used.has(`${t.component}.${t.weight}`));
  if (missing.length) {
    throw new RedlineError('lora_target', `${missing.length} LoRA targets are not weights of the model (first: ${missing[0]!.key}).`, 'The adapter does not fit this model.');
  }
  const target = g.input('target', 'f32', pred.shape);
  const lw = opts.lossWeights ? g.input('loss_weights', 'f32', [opts.fixed?.batch ?? 'batch']) : null;
  const loss = mseLoss(g, pred, target, lw);
  const extra = (opts.inputGrads ?? []).map((n) => inputs[n] ?? fail(n));
  finish(g, loss, params, extra, opts, origin);
  return {
    graph: g,
    kind: 'lora',
    params: params.map((p) => ({ name: p.name, shape: p.shape as number[] })),
    feeds: [...feeds, 'target', ...(lw ? ['loss_weights'] : [])],
    inputGrads: extra.map((v) => v.name),
  };
}

function fail(name: string): never {
  throw new RedlineError('train_config', `No gradient input named ${name} in this step.`, "Gradients w.r.t. encoder states need textEncoder: 'input'.");
}

/** Full UNet fine-tuning step: every UNet parameter is a graph input named 'unet.<name>'
 * (f32, fed each step) with its gradient output; the text encoder, if in the graph, is frozen. */
export function buildUnetFullStep(model: StepModel, opts: DiffusionStepOptions = {}): StepGraph {
  const g = new Graph('unet_full_step');
  const params: Value[] = [];
  const { pred, feeds, origin, inputs } = diffusionForward(model, {
    g,
    weight: (component, name, source) => {
      if (component !== 'unet') return undefined;
      const v = g.input(name, 'f32', [...source.shape]);
      params.push(v);
      return v;
    },
  }, opts);
  const target = g.input('target', 'f32', pred.shape);
  const lw = opts.lossWeights ? g.input('loss_weights', 'f32', [opts.fixed?.batch ?? 'batch']) : null;
  const loss = mseLoss(g, pred, target, lw);
  const extra = (opts.inputGrads ?? []).map((n) => inputs[n] ?? fail(n));
  finish(g, loss, params, extra, opts, origin);
  return {
    graph: g,
    kind: 'unet_full',
    params: params.map((p) => ({ name: p.name, shape: p.shape as number[] })),
    feeds: [...feeds, 'target', ...(lw ? ['loss_weights'] : [])],
    inputGrads: extra.map((v) => v.name),
  };
}

/** VAE decoder step: inputs 'z' [batch, 4, h, w] and 'target_img' [batch, 3, 8h, 8w];
 * loss = mean((decode(z) - target)^2); params 'vae.post_quant_conv.*' and 'vae.decoder.*'
 * (f32 graph inputs); also 'grad.z'. */
export function buildVaeDecoderStep(model: StepModel, opts: { decoded?: boolean } = {}): StepGraph {
  const g = new Graph('vae_decoder_step');
  const cfg = model.configs.vae;
  const z = g.input('z', 'f32', ['batch', cfg.latent_channels, 'height', 'width']);
  const dec = buildVaeDecoder(cfg, model.components.vae);
  const params: Value[] = [];
  const copied = copyGraph(g, dec, {
    prefix: 'vae.',
    inputs: { latent: z },
    outputs: ['image'],
    weight: (name, source) => {
      const v = g.input(name, 'f32', [...source.shape]);
      params.push(v);
      return v;
    },
  });
  const image = copied.outputs.image!;
  if (opts.decoded) g.output('decoded', image);
  const target = g.input('target_img', 'f32', image.shape);
  const d = op.sub(image, target);
  const loss = op.reduceMean(op.mul(d, d), d.shape.map((_, i) => i), false);
  g.output('loss', loss);
  const grads = gradients(loss, [...params, z]);
  [...params, z].forEach((p, i) => g.output(`grad.${p.name}`, grads[i]!));
  return { graph: g, kind: 'vae_decoder', params: params.map((p) => ({ name: p.name, shape: p.shape as number[] })), feeds: ['z', 'target_img'], inputGrads: ['z'] };
}
