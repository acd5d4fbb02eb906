// ONNX export of a Graph (opset 21 + com.microsoft). Two forms:
// - exportOnnx: one in-memory model with every weight inside (small models, tests);
// - writeOnnx: model file + external data, for models whose weights exceed protobuf's 2 GB
//   limit. Weights are read one at a time and written straight to the data file, or, when a
//   weight already lies raw in a file (safetensors), the model points at that file's bytes
//   through a hard link in the output folder, so nothing is copied at all.

import { closeSync, existsSync, linkSync, mkdirSync, openSync, readFileSync, realpathSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import type { AnyTypedArray, DType } from '../tensor/dtype.ts';
import { BYTES_PER_ELEMENT } from '../tensor/dtype.ts';
import { f32ToF16Bits } from '../tensor/half.ts';
import { GraphBuildError, type AttrValue, type Graph, type Value } from './graph.ts';
import { onnxDataType } from './ops.ts';

export const OPSET = 21;
export const MS_OPSET = 1;
const IR_VERSION = 10;
const PROTOBUF_LIMIT = 2 ** 31 - 1;

let root: protobuf.Root | undefined;
function modelType(): protobuf.Type {
  root ??= protobuf.parse(readFileSync(join(dirname(fileURLToPath(import.meta.url)), 'onnx.proto'), 'utf8'), { keepCase: true }).root;
  return root.lookupType('onnx.ModelProto');
}

export interface OnnxExportOptions {
  /** Store f32 weights as f16 (halves the file); a Cast back to f32 follows each, which ORT
   * folds once at session creation. */
  weightsAsF16?: boolean;
  /** Free-form model metadata (metadata_props). */
  metadata?: Record<string, string>;
}

export interface OnnxWriteOptions extends OnnxExportOptions {
  /** File name of the model inside the folder (default model.onnx). */
  modelName?: string;
  /** Weights of at least this many bytes go to external data (default 1024). */
  externalThreshold?: number;
  /** Point external data at the weights' own files (safetensors) instead of copying their
   * bytes, when the stored dtype is unchanged (default true). */
  linkSourceFiles?: boolean;
}

export interface OnnxWriteResult {
  modelPath: string;
  /** Bytes written to the model's own data file (linked source files not counted). */
  dataBytes: number;
  /** Weights served straight from their source files. */
  linkedWeights: number;
}

interface TensorMsg {
  name: string;
  dims: number[];
  data_type: number;
  raw_data?: Uint8Array;
  external_data?: { key: string; value: string }[];
  data_location?: number;
}

function bytesOf(a: AnyTypedArray): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

function toF16(a: AnyTypedArray): Uint16Array {
  const f = a as Float32Array;
  const out = new Uint16Array(f.length);
  for (let i = 0; i < f.length; i++) out[i] = f32ToF16Bits(f[i]!);
  return out;
}

function valueInfo(v: Value, name = v.name): object {
  return {
    name,
    type: {
      tensor_type: {
        elem_type: onnxDataType(v.dtype),
        shape: {
          dim: v.shape.map((d) => (typeof d === 'number' ? { dim_value: d } : /^[A-Za-z_]\w*$/.test(d) ? { dim_param: d } : {})),
        },
      },
    },
  };
}

function attribute(name: string, a: AttrValue): object {
  switch (a.kind) {
    case 'int': return { name, type: 2, i: a.value };
    case 'float': return { name, type: 1, f: a.value };
    case 'string': return { name, type: 3, s: new TextEncoder().encode(a.value) };
    case 'ints': return { name, type: 7, ints: [...a.value] };
    case 'floats': return { name, type: 6, floats: [...a.value] };
    case 'strings': return { name, type: 8, strings: a.value.map((s) => new TextEncoder().encode(s)) };
  }
}

/** Placement decision for one weight: embedded, appended to our data file, or linked. */
type Placement =
  | { kind: 'embed' }
  | { kind: 'append' }
  | { kind: 'link'; location: string; offset: number; length: number };

function buildModel(graph: Graph, opts: OnnxExportOptions, place: (name: string, bytes: () => Uint8Array, dtype: DType, shape: readonly number[], file?: { path: string; offset: number; length: number }) => TensorMsg): object {
  if (graph.outputs.length === 0) throw new GraphBuildError(`graph '${graph.name}' has no outputs`);
  const nodes: object[] = [];
  const initializers: TensorMsg[] = [];
  for (const init of graph.initializers) {
    const v = init.value;
    const shape = v.shape as number[];
    if (init.kind === 'constant') {
      initializers.push({ name: v.name, dims: shape, data_type: onnxDataType(v.dtype), raw_data: bytesOf(init.data) });
      continue;
    }
    const src = init.source;
    if (opts.weightsAsF16 && src.dtype === 'f32') {
      const stored = `${v.name}__f16`;
      initializers.push(place(stored, () => bytesOf(toF16(src.read())), 'f16', shape));
      nodes.push({ input: [stored], output: [v.name], name: `${v.name}__cast`, op_type: 'Cast', attribute: [attribute('to', { kind: 'int', value: 1 })] });
    } else {
      initializers.push(place(v.name, () => bytesOf(src.read()), src.dtype, shape, src.file));
    }
  }
  const outputNames = new Map<Value, string>();
  for (const o of graph.outputs) if (!outputNames.has(o.value)) outputNames.set(o.value, o.name);
  const rename = (v: Value | null): string => (v ? (outputNames.get(v) ?? v.name) : '');
  for (const n of graph.nodes) {
    nodes.push({
      input: n.inputs.map(rename),
      output: n.outputs.map(rename),
      name: n.name,
      op_type: n.opType,
      domain: n.domain,
      attribute: Object.entries(n.attrs).map(([k, a]) => attribute(k, a)),
    });
  }
  // An output that is a graph input or weight, or a second name for one value, needs an
  // Identity node to carry its name.
  for (const o of graph.outputs) {
    if (rename(o.value) !== o.name || !o.value.producer) {
      nodes.push({ input: [o.value.name], output: [o.name], name: `${o.name}__identity`, op_type: 'Identity' });
    }
  }
  const usesMs = graph.nodes.some((n) => n.domain === 'com.microsoft');
  return {
    ir_version: IR_VERSION,
    opset_import: [{ domain: '', version: OPSET }, ...(usesMs ? [{ domain: 'com.microsoft', version: MS_OPSET }] : [])],
    producer_name: 'redline',
    producer_version: '0.1',
    graph: {
      name: graph.name,
      node: nodes,
      initializer: initializers,
      input: graph.inputs.map((v) => valueInfo(v)),
      output: graph.outputs.map((o) => valueInfo(o.value, o.name)),
    },
    metadata_props: Object.entries(opts.metadata ?? {}).map(([key, value]) => ({ key, value })),
  };
}

function encode(model: object): Uint8Array {
  const type = modelType();
  const err = type.verify(model);
  if (err) throw new GraphBuildError(`ONNX model does not verify: ${err}`);
  return type.encode(type.fromObject(model)).finish();
}

/** The whole model, weights included, as ONNX bytes (under 2 GB). */
export function exportOnnx(graph: Graph, opts: OnnxExportOptions = {}): Uint8Array {
  let total = 0;
  const model = buildModel(graph, opts, (name, bytes, dtype, shape) => {
    total += shape.reduce((a, b) => a * b, 1) * BYTES_PER_ELEMENT[dtype];
    if (total > PROTOBUF_LIMIT) {
      throw new GraphBuildError(`graph '${graph.name}' holds more than 2 GB of weights; write it with writeOnnx (external data) instead`);
    }
    const raw = bytes();
    if (raw.byteLength !== shape.reduce((a, b) => a * b, 1) * BYTES_PER_ELEMENT[dtype]) {
      throw new GraphBuildError(`weight ${name}: read ${raw.byteLength} bytes, shape ${JSON.stringify(shape)} of ${dtype} expected`);
    }
    return { name, dims: [...shape], data_type: onnxDataType(dtype), raw_data: raw };
  });
  return encode(model);
}

const ALIGN = 4096; // page-aligned offsets let ORT map external data instead of reading it

/** Writes `<dir>/<modelName>` plus `<modelName>.data` (external weights). */
export function writeOnnx(graph: Graph, dir: string, opts: OnnxWriteOptions = {}): OnnxWriteResult {
  mkdirSync(dir, { recursive: true });
  const modelName = opts.modelName ?? 'model.onnx';
  const dataName = `${modelName}.data`;
  const threshold = opts.externalThreshold ?? 1024;
  const link = opts.linkSourceFiles ?? true;
  const fd = openSync(join(dir, dataName), 'w');
  let offset = 0;
  let linkedWeights = 0;
  // real source path -> link name in dir, or null where no hard link can be made. ORT
  // refuses external data outside the model's folder, symlinks included (it resolves them),
  // so a hard link is the only zero-copy way; across filesystems the bytes are copied.
  const links = new Map<string, string | null>();
  const linkFor = (path: string): string | null => {
    const real = realpathSync(path);
    let name = links.get(real);
    if (name === undefined) {
      name = `${modelName}.src${links.size}.${basename(real).replace(/[^\w.-]/g, '_')}`;
      const target = join(dir, name);
      try {
        if (existsSync(target)) unlinkSync(target);
        linkSync(real, target);
      } catch {
        name = null;
      }
      links.set(real, name);
    }
    return name;
  };
  try {
    const model = buildModel(graph, opts, (name, bytes, dtype, shape, file) => {
      const nbytes = shape.reduce((a, b) => a * b, 1) * BYTES_PER_ELEMENT[dtype];
      const base = { name, dims: [...shape], data_type: onnxDataType(dtype) };
      let p: Placement = nbytes < threshold ? { kind: 'embed' } : { kind: 'append' };
      if (p.kind === 'append' && link && file) {
        if (file.length !== nbytes) throw new GraphBuildError(`weight ${name}: source range holds ${file.length} bytes, ${nbytes} expected`);
        const location = linkFor(file.path);
        if (location !== null) p = { kind: 'link', location, offset: file.offset, length: file.length };
      }
      if (p.kind === 'embed') return { ...base, raw_data: bytes() };
      let location = dataName;
      let at = offset;
      if (p.kind === 'link') {
        linkedWeights++;
        location = p.location;
        at = p.offset;
      } else {
        const pad = (ALIGN - (offset % ALIGN)) % ALIGN;
        if (pad) writeSync(fd, new Uint8Array(pad), 0, pad, offset);
        at = offset + pad;
        const raw = bytes();
        if (raw.byteLength !== nbytes) throw new GraphBuildError(`weight ${name}: read ${raw.byteLength} bytes, ${nbytes} expected`);
        let done = 0;
        while (done < raw.byteLength) done += writeSync(fd, raw, done, raw.byteLength - done, at + done);
        offset = at + raw.byteLength;
      }
      return {
        ...base,
        data_location: 1,
        external_data: [
          { key: 'location', value: location },
          { key: 'offset', value: String(at) },
          { key: 'length', value: String(nbytes) },
        ],
      };
    });
    const modelPath = join(dir, modelName);
    const bytes = encode(model);
    const mfd = openSync(modelPath, 'w');
    try {
      let done = 0;
      while (done < bytes.byteLength) done += writeSync(mfd, bytes, done, bytes.byteLength - done);
    } finally {
      closeSync(mfd);
    }
    return { modelPath, dataBytes: offset, linkedWeights };
  } finally {
    closeSync(fd);
  }
}
