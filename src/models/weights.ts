// Binds a component's weights (diffusers parameter names) to graph weights. Weights that lie
// raw in a safetensors file are handed to the exporter by file range, so the ONNX model
// points at the checkpoint's own bytes (no copy); f16/bf16 weights get a Cast to the
// compute dtype, which ORT folds once at session creation.

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

function tensorSource(src: WeightSource, name: string): TensorSource {
  const shape = src.shape(name);
  const dtype = src.dtype(name);
  let file: TensorSource['file'];
  if (src instanceof MappedWeightSource) {
    const stored = src.stored(name);
    const info = stored.file.info(stored.key);
    file = { path: stored.file.path, offset: info.offset, length: info.byteLength };
  }
  return { dtype, shape, read: () => (src.get(name) as Tensor).data, ...(file ? { file } : {}) };
}

export function bindParams(g: Graph, src: WeightSource, label: string, computeDtype: DType = 'f32'): ParamBinder {
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
    const ts = tensorSource(src, name);
    let v = g.weight(name, ts);
    if (ts.dtype !== computeDtype) v = op.cast(v, computeDtype);
    cache.set(name, v);
    return v;
  }) as ParamBinder;
  bind.has = (name) => src.has(name);
  bind.unused = () => src.names().filter((n) => !used.has(n));
  return bind;
}
