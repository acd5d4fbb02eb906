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
  /** Names of the source not used by the graph (after building). */
  unused(): string[];
}

export interface BindOptions {
  /** dtype the graph computes in (default f32). */
  computeDtype?: DType;
  /** Convert weights to the compute dtype while exporting, instead of a Cast node that ORT
   * folds at every session creation: for models exported once into a cache. */
  widen?: boolean;
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
  bind.unused = () => src.names().filter((n) => !used.has(n));
  return bind;
}
