// Binds a component's weights (diffusers parameter names) to graph weights. Weights that lie
// raw in a safetensors file are handed to the exporter by file range, so the ONNX model
// points at the checkpoint's own bytes (no copy); f16/bf16 weights get a Cast to the
// compute dtype, which ORT folds once at session creation.

import { statSync } from 'node:fs';
import { RedlineError } from '../errors.ts';
import type { Graph, TensorSource, Value } from '../graph/graph.ts';
import * as op from '../graph/ops.ts';
import type { DType } from '../tensor/dtype.ts';
import type { Tensor } from '../tensor/tensor.ts';
import { MappedWeightSource, type WeightSource } from './checkpoint/weight-source.ts';

export type { WeightSource } from './checkpoint/weight-source.ts';

export interface ParamBinder {
  /** The weight `name` as a graph value in the compute dtype; `shape` is checked when given. */
  (name: string, shape?: readonly number[]): Value;
  has(name: string): boolean;
  /** Adapter branches for adaptable modules (the runtime LoRA path), when configured. */
  readonly moduleHook?: ModuleHook;
  /** Names of the source not used by the graph (after building). */
  unused(): string[];
}

export interface BindOptions {
  /** dtype the graph computes in (default f32). */
  computeDtype?: DType;
  /** Convert weights to the compute dtype while exporting, instead of a Cast node that ORT
   * folds at every session creation: for models exported once into a cache. */
  widen?: boolean;
  /** Adds adapter branches to the modules built with linearModule / convModule. */
  moduleHook?: ModuleHook;
}

/**
 * Lets an adapter change a Linear or Conv2d module without the builders knowing about
 * adapters (implemented by src/adapters/graph-lora.ts). `module` is the diffusers module
 * path (`down_blocks.0.attentions.0.proj_in`, `text_model.encoder.layers.0.mlp.fc1`).
 */
export interface ModuleHook {
  /** The weight the module computes with: `weight` itself, or weight + in-graph deltas. */
  weight(module: string, weight: Value): Value;
  /** The module's output `y` plus any low-rank branches computed from its input `x`;
   * `conv` carries the target convolution's strides and pads. */
  output(module: string, x: Value, y: Value, conv?: { strides: number[]; pads: number[] }): Value;
}

/** torch.nn.Linear for the module at `module` (weight `${module}.weight`), with the adapter
 * branches of `p.moduleHook` when one is configured. */
export function linearModule(p: ParamBinder, module: string, x: Value, opts: { bias?: boolean; shape?: readonly [number, number] } = {}): Value {
  const hook = p.moduleHook;
  let w = p(`${module}.weight`, opts.shape);
  if (hook) w = hook.weight(module, w);
  const y = op.linear(x, w, opts.bias === false ? null : p(`${module}.bias`, opts.shape ? [opts.shape[0]] : undefined));
  return hook ? hook.output(module, x, y) : y;
}

/** torch.nn.Conv2d ('same' padding for odd kernels) for the module at `module`, with the
 * adapter branches of `p.moduleHook` when one is configured. */
export function convModule(p: ParamBinder, module: string, x: Value, opts: { stride?: number } = {}): Value {
  const hook = p.moduleHook;
  let w = p(`${module}.weight`);
  const k = w.shape[2] as number;
  const pad = (k - 1) / 2;
  const s = opts.stride ?? 1;
  const conv = { strides: [s, s], pads: [pad, pad, pad, pad] };
  if (hook) w = hook.weight(module, w);
  const y = op.conv(x, w, p(`${module}.bias`), conv);
  return hook ? hook.output(module, x, y, conv) : y;
}

function tensorSource(src: WeightSource, name: string, widenTo: DType | undefined): TensorSource {
  const shape = src.shape(name);
  const stored = src.dtype(name);
  let file: TensorSource['file'];
  let origin: string | undefined;
  if (src instanceof MappedWeightSource) {
    const s = src.stored(name);
    const info = s.file.info(s.key);
    file = { path: s.file.path, offset: info.offset, length: info.byteLength };
    const st = statSync(s.file.path);
    origin = `${s.file.path}:${st.size}:${st.mtimeMs}:${info.offset}:${info.byteLength}:${stored}`;
  }
  if (widenTo && widenTo !== stored) {
    if (widenTo !== 'f32') throw new Error(`widening weights to ${widenTo} is not supported`);
    return { dtype: 'f32', shape, read: () => src.get(name).toFloat32(), ...(origin ? { origin: `${origin}->f32` } : {}) };
  }
  return { dtype: stored, shape, read: () => (src.get(name) as Tensor).data, ...(file ? { file } : {}), ...(origin ? { origin } : {}) };
}

export function bindParams(g: Graph, src: WeightSource, label: string, opts: BindOptions = {}): ParamBinder {
  const computeDtype = opts.computeDtype ?? 'f32';
  const used = new Set<string>();
  const cache = new Map<string, Value>();
  const bind = ((name: string, shape?: readonly number[]): Value => {
    const hit = cache.get(name);
    if (hit) return hit;
    if (!src.has(name)) {
      throw new RedlineError('weight_missing', `${label} has no weight named "${name}".`, 'The weights do not match the model config; check that the checkpoint is an SD 1.5-family model.');
    }
    const actual = src.shape(name);
    if (shape && (shape.length !== actual.length || shape.some((d, i) => d !== actual[i]))) {
      throw new RedlineError('weight_shape', `${label}: weight "${name}" has shape [${actual.join(', ')}], the config implies [${shape.join(', ')}].`, 'The weights do not match the model config.');
    }
    used.add(name);
    const ts = tensorSource(src, name, opts.widen ? computeDtype : undefined);
    let v = g.weight(name, ts);
    if (ts.dtype !== computeDtype) v = op.cast(v, computeDtype);
    cache.set(name, v);
    return v;
  }) as ParamBinder;
  bind.has = (name) => src.has(name);
  if (opts.moduleHook) (bind as { moduleHook?: ModuleHook }).moduleHook = opts.moduleHook;
  bind.unused = () => src.names().filter((n) => !used.has(n));
  return bind;
}
