// Training-step graphs for training a model from scratch (the embedded default model):
// the whole VAE as an autoencoder, and text encoder + UNet together. They follow the
// conventions of src/train/step (weights are graph inputs fed from the optimizer's arrays,
// outputs 'loss' and 'grad.<name>') and run on its TrainStepSession-compatible runner.
import { gradients } from '../../graph/autodiff.ts';
import { Graph, type Value } from '../../graph/graph.ts';
import * as op from '../../graph/ops.ts';
import type { SD15Configs } from '../../models/checkpoint/configs.ts';
import { buildTextEncoder } from '../../models/text-encoder.ts';
import { buildUnet } from '../../models/unet.ts';
import { buildVaeDecoder, buildVaeEncoder } from '../../models/vae.ts';
import type { WeightSource } from '../../models/weights.ts';
import { copyGraph } from '../step/compose.ts';
import { type StepGraph, weightedMse } from '../step/graphs.ts';

function trainable(g: Graph, params: Value[]) {
  return (name: string, source: { shape: readonly number[] }): Value => {
    const v = g.input(name, 'f32', [...source.shape]);
    params.push(v);
    return v;
  };
}

function mse(a: Value, b: Value): Value {
  const d = op.sub(a, b);
  return op.reduceMean(op.mul(d, d), d.shape.map((_, i) => i), false);
}

/**
 * Autoencoder step: input 'image' [B, 3, H, W] in [-1, 1]; loss = mse(decode(mean), image)
 * + latentPenalty · mean(mean²). The encoder is trained deterministically (its mean), the
 * small penalty keeps the latent scale bounded as the KL term of a VAE would.
 */
export function buildAutoencoderStep(configs: SD15Configs, weights: WeightSource, latentPenalty: number, batch: number, imageSize: number): StepGraph {
  const g = new Graph('autoencoder_step');
  const params: Value[] = [];
  // fixed sizes let the decoder's output shape match the input's exactly
  const image = g.input('image', 'f32', [batch, configs.vae.in_channels, imageSize, imageSize]);
  const enc = copyGraph(g, buildVaeEncoder(configs.vae, weights), { prefix: 'vae.', inputs: { image }, outputs: ['mean'], weight: trainable(g, params) });
  const mean = enc.outputs.mean!;
  const seen = new Map(params.map((p) => [p.name, p]));
  const dec = copyGraph(g, buildVaeDecoder(configs.vae, weights), {
    prefix: 'vae.',
    inputs: { latent: mean },
    outputs: ['image'],
    weight: (name, source) => seen.get(name) ?? trainable(g, params)(name, source),
  });
  const loss = op.add(mse(dec.outputs.image!, image), op.mul(op.reduceMean(op.mul(mean, mean), [0, 1, 2, 3], false), latentPenalty));
  g.output('loss', loss);
  const grads = gradients(loss, params);
  params.forEach((p, i) => g.output(`grad.${p.name}`, grads[i]!));
  return { graph: g, kind: 'vae_decoder', params: params.map((p) => ({ name: p.name, shape: p.shape as number[] })), feeds: ['image'], inputGrads: [] };
}

/**
 * Text encoder + UNet step (both trainable): inputs noisy_latents, timestep, input_ids,
 * target (and loss_weights [B] with opts.lossWeights); loss = mse(unet(noisy, t, te(ids)),
 * target), each sample weighted when loss weights are given. Param names 'text_encoder.<name>'
 * and 'unet.<name>'.
 */
export function buildTextUnetStep(configs: SD15Configs, weights: { unet: WeightSource; text_encoder: WeightSource }, opts: { lossWeights?: boolean } = {}): StepGraph {
  const g = new Graph('text_unet_step');
  const params: Value[] = [];
  const noisy = g.input('noisy_latents', 'f32', ['batch', configs.unet.in_channels, 'height', 'width']);
  const timestep = g.input('timestep', 'f32', ['batch']);
  const ids = g.input('input_ids', 'i64', ['batch', configs.text_encoder.max_position_embeddings]);
  const te = copyGraph(g, buildTextEncoder(configs.text_encoder, weights.text_encoder, { maxClipSkip: 1 }), {
    prefix: 'text_encoder.',
    inputs: { input_ids: ids },
    outputs: ['last_hidden_state'],
    weight: trainable(g, params),
  });
  const unet = copyGraph(g, buildUnet(configs.unet, weights.unet), {
    prefix: 'unet.',
    inputs: { sample: noisy, timestep, encoder_hidden_states: te.outputs.last_hidden_state! },
    outputs: ['out_sample'],
    weight: trainable(g, params),
  });
  const pred = unet.outputs.out_sample!;
  const target = g.input('target', 'f32', pred.shape);
  // per-sample weights (min-SNR) as the LoRA steps weigh them
  const loss = opts.lossWeights ? weightedMse(pred, target, g.input('loss_weights', 'f32', ['batch'])) : mse(pred, target);
  g.output('loss', loss);
  const grads = gradients(loss, params);
  params.forEach((p, i) => g.output(`grad.${p.name}`, grads[i]!));
  return { graph: g, kind: 'unet_full', params: params.map((p) => ({ name: p.name, shape: p.shape as number[] })), feeds: ['noisy_latents', 'timestep', 'input_ids', 'target', ...(opts.lossWeights ? ['loss_weights'] : [])], inputGrads: [] };
}
