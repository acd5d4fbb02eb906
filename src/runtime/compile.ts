// Graph -> running session. Small graphs go to ORT as bytes; big ones are written as a model
// file plus external data (weights linked from their checkpoint where possible) and the
// session is created from the path, so ORT maps the weights instead of copying them.

import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, renameSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Graph } from '../graph/graph.ts';
import { exportOnnx, writeOnnx, type OnnxExportOptions } from '../graph/onnx.ts';
import { BYTES_PER_ELEMENT } from '../tensor/dtype.ts';
import { Session, type SessionOptions } from './session.ts';

export interface CompileOptions extends SessionOptions, OnnxExportOptions {
  /** Graphs with more weight bytes than this go through a model file (default 256 MiB). */
  inMemoryLimit?: number;
  /** Folder for the model file; default a temporary folder removed once the session exists
   * (the mapped weights stay valid after unlinking). */
  workDir?: string;
  /** Keep exported models here, keyed by graph structure, weight origins, provider, ORT
   * version and CPU, and reuse them. On the CPU the cache holds the graph as ORT optimised
   * it, so a later load only maps its weights (about a second for the UNet instead of a
   * minute of constant folding and weight reordering). Graphs whose weights have no origin
   * are not cached. */
  cacheDir?: string;
}

/** Identity of an exported graph: structure, constants and where every weight comes from;
 * undefined when some weight has no stable origin (in-memory tensors). */
export function graphCacheKey(g: Graph, opts: OnnxExportOptions = {}, environment = ''): string | undefined {
  const h = createHash('sha256');
  h.update(JSON.stringify({ format: 1, weightsAsF16: !!opts.weightsAsF16, name: g.name, environment }));
  for (const init of g.initializers) {
    const v = init.value;
    h.update(`${v.name}|${v.dtype}|${v.shape.join(',')}|`);
    if (init.kind === 'constant') h.update(new Uint8Array(init.data.buffer, init.data.byteOffset, init.data.byteLength));
    else if (init.source.origin) h.update(init.source.origin);
    else return undefined;
  }
  for (const v of g.inputs) h.update(`in|${v.name}|${v.dtype}|${v.shape.join(',')}\n`);
  for (const o of g.outputs) h.update(`out|${o.name}|${o.value.name}\n`);
  for (const n of g.nodes) h.update(JSON.stringify([n.opType, n.domain, n.inputs.map((v) => v?.name ?? ''), n.outputs.map((v) => v.name), n.attrs]));
  return h.digest('hex').slice(0, 32);
}

function ortVersion(): string {
  return (createRequire(import.meta.url)('onnxruntime-node/package.json') as { version: string }).version;
}

export function weightBytes(g: Graph): number {
  let n = 0;
  for (const i of g.initializers) {
    const shape = i.value.shape as number[];
    n += shape.reduce((a, b) => a * b, 1) * BYTES_PER_ELEMENT[i.value.dtype];
  }
  return n;
}

export async function compileGraph(g: Graph, opts: CompileOptions = {}): Promise<Session> {
  if (weightBytes(g) <= (opts.inMemoryLimit ?? 256 * 2 ** 20)) return Session.create(exportOnnx(g, opts), opts);
  const provider = opts.provider ?? 'cpu';
  const key = opts.cacheDir ? graphCacheKey(g, opts, `${provider}|${ortVersion()}|${cpus()[0]?.model ?? ''}|${opts.optimization ?? 'all'}`) : undefined;
  if (opts.cacheDir && key) {
    const dir = join(opts.cacheDir, `${g.name}-${key}`);
    const modelPath = join(dir, 'model.onnx');
    if (existsSync(modelPath)) {
      return Session.create(modelPath, provider === 'cpu' ? { ...opts, optimization: 'disabled' } : opts);
    }
    const partial = `${dir}.partial-${process.pid}`;
    rmSync(partial, { recursive: true, force: true });
    if (provider !== 'cpu') {
      // other providers rewrite the graph for their device at load: cache the export only
      writeOnnx(g, partial, opts);
      renameSync(partial, dir);
      return Session.create(modelPath, opts);
    }
    const raw = join(partial, 'export');
    const { modelPath: rawPath } = writeOnnx(g, raw, opts);
    const session = await Session.create(rawPath, { ...opts, saveOptimizedModel: join(partial, 'model.onnx') });
    rmSync(raw, { recursive: true, force: true }); // the session keeps its mapped pages
    rmSync(dir, { recursive: true, force: true });
    renameSync(partial, dir);
    return session;
  }
  const dir = opts.workDir ?? mkdtempSync(join(tmpdir(), `redline-${g.name}-`));
  try {
    const { modelPath } = writeOnnx(g, dir, opts);
    return await Session.create(modelPath, opts);
  } finally {
    if (!opts.workDir) rmSync(dir, { recursive: true, force: true });
  }
}
