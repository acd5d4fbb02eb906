// CLIP text model (transformers CLIPTextModel, classic `text_model.*` names) as a graph.
// Outputs: last_hidden_state, pooled_output (the state at the first EOS = the highest id, as
// transformers does for SD 1.5's legacy eos_token_id), and clip_skip_N for N >= 2:
// final_layer_norm(hidden_states[-N]), A1111's "clip skip N" (clip_skip_1 = last state).

import { RedlineError } from '../errors.ts';
import { Graph, type Value } from '../graph/graph.ts';
import * as op from '../graph/ops.ts';
import type { CLIPTextConfig } from './checkpoint/configs.ts';
import { bindParams, linearModule, type ModuleHook, type ParamBinder, type WeightSource } from './weights.ts';

export type { CLIPTextConfig } from './checkpoint/configs.ts';

export interface TextEncoderBuildOptions {
  /** Largest clip skip to expose (default: the number of layers, capped at 12). */
  maxClipSkip?: number;
  /** Convert f16/bf16 weights to f32 at export instead of in ORT (for cached exports). */
  widenWeights?: boolean;
  /** Adapter branches on the Linear modules (runtime LoRA, src/adapters/graph-lora.ts). */
  moduleHook?: ModuleHook;
  /** 'reference' (default): MatMul/Softmax, exact on every provider; the 77x77 maps are
   * tiny. 'mha': com.microsoft.MultiHeadAttention (on WebGPU with lavapipe it was measured
   * ~1e-2 off the CPU, see src/models/README.md). */
  attention?: 'reference' | 'mha';
}

const F32_LOWEST = -3.4028234663852886e38;

function activation(name: string, x: Value): Value {
  switch (name) {
    case 'quick_gelu': return op.quickGelu(x);
    case 'gelu': return op.gelu(x);
    case 'gelu_new': return op.gelu(x, 'tanh');
    default:
      throw new RedlineError('config_unsupported', `text encoder activation "${name}" is not supported.`, 'SD 1.5 text encoders use quick_gelu.');
  }
}

function encoderLayer(p: ParamBinder, prefix: string, x: Value, cfg: CLIPTextConfig, causal: Value, attention: 'reference' | 'mha'): Value {
  const h = cfg.hidden_size;
  const lin = (name: string, v: Value, out: number, inp: number): Value => linearModule(p, `${prefix}.${name}`, v, { shape: [out, inp] });
  const ln = (name: string, v: Value): Value => op.layerNorm(v, p(`${prefix}.${name}.weight`, [h]), p(`${prefix}.${name}.bias`, [h]), cfg.layer_norm_eps);
  let residual = x;
  let y = ln('layer_norm1', x);
  const q = lin('self_attn.q_proj', y, h, h);
  const k = lin('self_attn.k_proj', y, h, h);
  const v = lin('self_attn.v_proj', y, h, h);
  y = attention === 'mha'
    ? op.multiHeadAttention(q, k, v, cfg.num_attention_heads, { attentionBias: causal })
    : op.attentionReference(q, k, v, cfg.num_attention_heads, causal);
  y = op.add(residual, lin('self_attn.out_proj', y, h, h));
  residual = y;
  let m = ln('layer_norm2', y);
  m = activation(cfg.hidden_act, lin('mlp.fc1', m, cfg.intermediate_size, h));
  return op.add(residual, lin('mlp.fc2', m, h, cfg.intermediate_size));
}

/** Graph inputs: input_ids i64 [batch, max_position_embeddings]. */
export function buildTextEncoder(cfg: CLIPTextConfig, weights: WeightSource, opts: TextEncoderBuildOptions = {}): Graph {
  const g = new Graph('text_encoder');
  const p = bindParams(g, weights, 'text encoder', { widen: !!opts.widenWeights, ...(opts.moduleHook ? { moduleHook: opts.moduleHook } : {}) });
  const n = cfg.max_position_embeddings;
  const h = cfg.hidden_size;
  const ids = g.input('input_ids', 'i64', ['batch', n]);
  const tokens = op.gather(p('text_model.embeddings.token_embedding.weight', [cfg.vocab_size, h]), ids);
  let x = op.add(tokens, p('text_model.embeddings.position_embedding.weight', [n, h]));
  const mask = new Float32Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) mask[i * n + j] = F32_LOWEST;
  const causal = g.constant(mask, 'f32', [1, 1, n, n], 'causal_mask');
  const hidden: Value[] = [x];
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    x = g.scope(`layers.${l}`, () => encoderLayer(p, `text_model.encoder.layers.${l}`, x, cfg, causal, opts.attention ?? 'reference'));
    hidden.push(x);
  }
  const finalNorm = (v: Value): Value =>
    op.layerNorm(v, p('text_model.final_layer_norm.weight', [h]), p('text_model.final_layer_norm.bias', [h]), cfg.layer_norm_eps);
  const last = finalNorm(x);
  g.output('last_hidden_state', last);
  // pooled: the state at argmax(ids) (first EOS), selected by an exact one-hot sum
  const eos = op.unsqueeze(op.argMax(ids, 1, false), [1]); // [batch, 1]
  const positions = op.constant(g, 'i64', Array.from({ length: n }, (_, i) => i), [1, n], 'positions');
  const onehot = op.unsqueeze(op.cast(op.equal(positions, eos), 'f32'), [2]); // [batch, n, 1]
  g.output('pooled_output', op.reduceSum(op.mul(last, onehot), [1], false));
  const maxSkip = Math.min(opts.maxClipSkip ?? Math.min(cfg.num_hidden_layers, 12), cfg.num_hidden_layers);
  for (let s = 2; s <= maxSkip; s++) g.output(`clip_skip_${s}`, finalNorm(hidden[hidden.length - s]!));
  const unused = p.unused().filter((k) => !k.endsWith('position_ids'));
  if (unused.length) {
    throw new RedlineError('weight_unexpected', `text encoder weights include ${unused.length} tensors the model does not use (first: ${unused[0]}).`, 'The weights do not match the CLIP text model config.');
  }
  return g;
}
