// Graph -> running session. Small graphs go to ORT as bytes; big ones are written as a model
// file plus external data (weights linked from their checkpoint where possible) and the
// session is created from the path, so ORT maps the weights instead of copying them.

import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { arch, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Graph } from '../graph/graph.ts';
import { exportOnnx, writeOnnx, type OnnxExportOptions } from '../graph/onnx.ts';
import { BYTES_PER_ELEMENT } from '../tensor/dtype.ts';
import { cacheMaxBytesFromEnv, leaseEntry, pruneCache } from './compile-cache.ts';
import { DEFAULT_PREPACK, Session, type SessionOptions } from './session.ts';

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
  /** Size cap of `cacheDir` in bytes: after adding an entry, least-recently-used entries
   * that no live session uses are evicted until the cache fits (default: the
   * REDLINE_ONNX_CACHE_MAX_GB environment variable, else 20 GiB). */
  cacheMaxBytes?: number;
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

/** What cached entries depend on besides the graph: ORT's version and the CPU. ORT's NCHWc
 * blocking and MLAS's packed weights follow the instruction set (AVX-512 blocks by 16, AVX2
 * by 8), and VMs often report only a family name ("AMD EPYC"), so the feature flags are part
 * of the identity. Read once per process: compileGraph runs for every graph. */
let runtimeIdentity: string | undefined;
function ortAndCpuIdentity(): string {
  if (runtimeIdentity !== undefined) return runtimeIdentity;
  let flags = '';
  try {
    flags = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? '';
  } catch {
    // not Linux: the model name is all there is
  }
  const isa = flags.split(/\s+/).filter((f) => /^(avx|fma|f16c|amx|sse4)/.test(f)).sort().join(',');
  const ort = (createRequire(import.meta.url)('onnxruntime-node/package.json') as { version: string }).version;
  runtimeIdentity = `${ort}|${cpus()[0]?.model ?? ''}|${arch()}|${isa}`;
  return runtimeIdentity;
}

export function weightBytes(g: Graph): number {
  let n = 0;
  for (const i of g.initializers) {
    const shape = i.value.shape as number[];
    n += shape.reduce((a, b) => a * b, 1) * BYTES_PER_ELEMENT[i.value.dtype];
  }
  return n;
}

/** Session options found best for particular graphs by measurement, set by their builders. */
export type GraphSessionDefaults = Pick<SessionOptions, 'memPattern' | 'prepack'>;

const graphDefaults = new WeakMap<Graph, GraphSessionDefaults>();

/** Records session options that suit `g` (e.g. the VAE decoder runs faster without ORT's
 * memory pattern); compileGraph applies them unless its caller sets the same options. */
export function setGraphSessionDefaults(g: Graph, defaults: GraphSessionDefaults): void {
  graphDefaults.set(g, { ...graphDefaults.get(g), ...defaults });
}

export async function compileGraph(g: Graph, callerOpts: CompileOptions = {}): Promise<Session> {
  const opts: CompileOptions = { ...graphDefaults.get(g) };
  for (const [k, v] of Object.entries(callerOpts)) if (v !== undefined) (opts as Record<string, unknown>)[k] = v;
  const provider = opts.provider ?? 'cpu';
  const environment = [provider, ortAndCpuIdentity(), opts.optimization ?? 'all', `prepack=${opts.prepack ?? DEFAULT_PREPACK}`].join('|');
  const key = opts.cacheDir ? graphCacheKey(g, opts, environment) : undefined;
  // Cached whatever their size: a hit skips ORT's optimisation (for the VAE decoder, ~5 CPU s
  // of constant folding and NCHWc weight reordering at every load).
  if (opts.cacheDir && key) return compileCached(g, opts, opts.cacheDir, key, provider);
  if (weightBytes(g) <= (opts.inMemoryLimit ?? 256 * 2 ** 20)) return Session.create(exportOnnx(g, opts), opts);
  const dir = opts.workDir ?? mkdtempSync(join(tmpdir(), `redline-${g.name}-`));
  try {
    const { modelPath } = writeOnnx(g, dir, opts);
    return await Session.create(modelPath, opts);
  } finally {
    if (!opts.workDir) rmSync(dir, { recursive: true, force: true });
  }
}

/** A session on the entry at `dir`, leased until the session is released. */
async function leasedSession(dir: string, create: () => Promise<Session>): Promise<Session | undefined> {
  const lease = leaseEntry(dir);
  if (!lease) return undefined;
  try {
    const session = await create();
    session.onRelease(() => lease.release());
    return session;
  } catch (err) {
    lease.release();
    throw err;
  }
}

async function compileCached(g: Graph, opts: CompileOptions, cacheDir: string, key: string, provider: string): Promise<Session> {
  const maxBytes = opts.cacheMaxBytes ?? cacheMaxBytesFromEnv();
  const name = `${g.name}-${key}`;
  const dir = join(cacheDir, name);
  const modelPath = join(dir, 'model.onnx');
  const hitOptions = provider === 'cpu' ? { ...opts, optimization: 'disabled' as const } : opts;
  if (existsSync(modelPath)) {
    try {
      const hit = await leasedSession(dir, () => Session.create(modelPath, hitOptions));
      if (hit) return hit;
    } catch (err) {
      if (existsSync(modelPath)) throw err; // else evicted while loading: build it again
    }
  }
  const partial = `${dir}.partial-${process.pid}`;
  rmSync(partial, { recursive: true, force: true });
  let session: Session | undefined;
  if (provider !== 'cpu') {
    // other providers rewrite the graph for their device at load: cache the export only
    writeOnnx(g, partial, opts);
  } else {
    const raw = join(partial, 'export');
    const { modelPath: rawPath } = writeOnnx(g, raw, opts);
    session = await Session.create(rawPath, { ...opts, saveOptimizedModel: join(partial, 'model.onnx') });
    rmSync(raw, { recursive: true, force: true }); // the session keeps its mapped pages
  }
  rmSync(dir, { recursive: true, force: true });
  renameSync(partial, dir);
  const lease = leaseEntry(dir);
  if (session) {
    if (lease) session.onRelease(() => lease.release());
  } else {
    try {
      session = await Session.create(modelPath, opts);
    } catch (err) {
      lease?.release();
      throw err;
    }
    if (lease) session.onRelease(() => lease.release());
  }
  try {
    pruneCache(cacheDir, maxBytes, { keep: [name] });
  } catch (err) {
    await session.release();
    throw err;
  }
  return session;
}
