// ONNX Runtime sessions. One place decides providers and session options, so every model
// (text encoder, UNet, VAE, small sampler graphs) runs with the same measured settings.
//
// Providers: ORT throws when an execution provider cannot start (no WebGPU adapter, no CUDA
// libraries); it never falls back on its own. We turn that into a RedlineError, and fall
// back to the CPU only when the caller allowed it, recording why.

import { availableParallelism } from 'node:os';
import { basename } from 'node:path';
import * as ort from 'onnxruntime-node';
import { RedlineError } from '../errors.ts';
import { Graph } from '../graph/graph.ts';
import { exportOnnx } from '../graph/onnx.ts';
import * as op from '../graph/ops.ts';
import type { DType } from '../tensor/dtype.ts';
import { Tensor } from '../tensor/tensor.ts';

export type Provider = 'cpu' | 'webgpu' | 'cuda';
export const PROVIDERS: readonly Provider[] = ['cpu', 'webgpu', 'cuda'];

export interface SessionOptions {
  /** Execution provider (default 'cpu'). */
  provider?: Provider;
  /** Use the CPU when `provider` cannot start, instead of failing (default false). */
  allowFallback?: boolean;
  /** Intra-op threads (default: all cores). */
  threads?: number;
  /** ORT graph optimisation level (default 'all'). */
  optimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Pre-pack constant weights at load (faster GEMM/conv kernels, slower load, extra
   * memory). Default: see DEFAULT_PREPACK. */
  prepack?: boolean;
  /** CPU memory arena (default true: steps reuse the same buffers instead of fresh pages). */
  memArena?: boolean;
  /** ORT's memory pattern: plan every intermediate into one block per run (default true;
   * see src/runtime/README.md for when it costs more than it saves). */
  memPattern?: boolean;
  /** Write an ORT profile (JSON) with this file prefix. */
  profilePrefix?: string;
  /** Save the graph as ORT optimised it (constants folded, CPU weight layouts reordered) to
   * this .onnx path, its weights in `<path>.data`; loading that file with optimization
   * 'disabled' maps the weights and skips all of this work. */
  saveOptimizedModel?: string;
  /** Log level passed to ORT (default 'error'). */
  logLevel?: 'verbose' | 'info' | 'warning' | 'error' | 'fatal';
}

/** Off, except for graphs whose builder asks for it (the UNet: ~10% per step). Pre-packing
 * at load copies every GEMM weight; the compile cache saves the packed weights with the
 * optimised model so that a cached load maps them instead. ORT 1.30's saved pre-packed
 * weights crash (SIGSEGV at run) for our CLIP text encoder graph, so no graph gets them
 * without a cache-hit test of its own (src/runtime/README.md, "Pre-packing"). */
export const DEFAULT_PREPACK = false;

const ORT_TYPES: Partial<Record<DType, ort.Tensor.Type>> = {
  f32: 'float32', f16: 'float16', f64: 'float64', i64: 'int64', i32: 'int32', i16: 'int16', i8: 'int8', u8: 'uint8', bool: 'bool',
};
const FROM_ORT: Record<string, DType> = Object.fromEntries(Object.entries(ORT_TYPES).map(([d, t]) => [t, d as DType]));

export function toOrtTensor(t: Tensor): ort.Tensor {
  const type = ORT_TYPES[t.dtype];
  if (!type) throw new RedlineError('dtype_unsupported', `ONNX Runtime inputs cannot be ${t.dtype}.`, 'Convert the tensor to f32 or f16 first.');
  if (t.dtype === 'f16') return new ort.Tensor('float16', t.data as Uint16Array, [...t.shape]);
  return new ort.Tensor(type as 'float32', t.data as Float32Array, [...t.shape]);
}

export function fromOrtTensor(t: ort.Tensor): Tensor {
  const dtype = FROM_ORT[t.type];
  if (!dtype) throw new Error(`ORT output of type ${t.type} is not supported`);
  const data = t.data as Tensor['data'];
  return new Tensor(dtype, [...t.dims], dtype === 'bool' ? new Uint8Array(data.buffer, data.byteOffset, data.length) : data);
}

function providerHint(p: Provider): string {
  switch (p) {
    case 'webgpu':
      return 'WebGPU needs a GPU with a Vulkan driver (on headless Linux: the Vulkan loader and libglvnd, and VK_DRIVER_FILES pointing at the ICD). Use --device cpu, or allow the CPU fallback.';
    case 'cuda':
      return 'The CUDA provider needs CUDA 12 and cuDNN 9, and onnxruntime-node installed with its CUDA binaries (ONNXRUNTIME_NODE_INSTALL_CUDA=v12 npm install). Use --device cpu, or allow the CPU fallback.';
    default:
      return 'Reinstall onnxruntime-node.';
  }
}

function ortOptions(provider: Provider, o: SessionOptions): ort.InferenceSession.SessionOptions {
  const config: Record<string, string> = {};
  if (!(o.prepack ?? DEFAULT_PREPACK)) config['session.disable_prepacking'] = '1';
  if (o.saveOptimizedModel) {
    config['session.optimized_model_external_initializers_file_name'] = `${basename(o.saveOptimizedModel)}.data`;
    config['session.optimized_model_external_initializers_min_size_in_bytes'] = '1024';
    // The saved model then also holds the pre-packed GEMM weights, which a later load maps
    // instead of packing again (UNet: ~2 s load instead of ~5-7 s; README has the figures).
    if (o.prepack ?? DEFAULT_PREPACK) config['session.save_external_prepacked_constant_initializers'] = '1';
  }
  const ep: ort.InferenceSession.ExecutionProviderConfig =
    provider === 'webgpu' ? { name: 'webgpu' } : provider === 'cuda' ? { name: 'cuda' } : { name: 'cpu' };
  return {
    executionProviders: [ep],
    graphOptimizationLevel: o.optimization ?? 'all',
    intraOpNumThreads: o.threads ?? availableParallelism(),
    interOpNumThreads: 1,
    executionMode: 'sequential',
    enableCpuMemArena: o.memArena ?? true,
    enableMemPattern: o.memPattern ?? true,
    logSeverityLevel: ({ verbose: 0, info: 1, warning: 2, error: 3, fatal: 4 } as const)[o.logLevel ?? 'error'],
    ...(o.profilePrefix ? { enableProfiling: true, profileFilePrefix: o.profilePrefix } : {}),
    ...(o.saveOptimizedModel ? { optimizedModelFilePath: o.saveOptimizedModel } : {}),
    extra: { session: Object.fromEntries(Object.entries(config).map(([k, v]) => [k.replace(/^session\./, ''), v])) },
  };
}

export type Feed = Tensor | ort.Tensor;

/** An ORT session plus the provider it really runs on. */
export class Session {
  private readonly releaseHooks: (() => void)[] = [];

  private constructor(
    readonly ort: ort.InferenceSession,
    /** The provider the session runs on (cpu after a permitted fallback). */
    readonly provider: Provider,
    /** Why the requested provider was not used, after a permitted fallback. */
    readonly fallbackReason: string | undefined,
  ) {}

  /** Creates a session from ONNX bytes or a model path (use the path for models with
   * external data: ORT maps the weights instead of copying them through JS). */
  static async create(model: Uint8Array | string, opts: SessionOptions = {}): Promise<Session> {
    const provider = opts.provider ?? 'cpu';
    if (!PROVIDERS.includes(provider)) {
      throw new RedlineError('provider_unknown', `Unknown execution provider "${String(provider)}".`, `Choose one of ${PROVIDERS.join(', ')}.`);
    }
    const make = (p: Provider): Promise<ort.InferenceSession> =>
      typeof model === 'string' ? ort.InferenceSession.create(model, ortOptions(p, opts)) : ort.InferenceSession.create(model, ortOptions(p, opts));
    try {
      return new Session(await make(provider), provider, undefined);
    } catch (err) {
      const why = (err as Error).message.split('\n')[0]!.slice(0, 400);
      if (provider === 'cpu' || !isProviderFailure(why)) throw err;
      if (!opts.allowFallback) {
        throw new RedlineError('provider_unavailable', `The ${provider} execution provider could not start: ${why}.`, providerHint(provider));
      }
      return new Session(await make('cpu'), 'cpu', `${provider} could not start: ${why}`);
    }
  }

  get inputNames(): readonly string[] {
    return this.ort.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.ort.outputNames;
  }

  /** Runs the model. `outputs` may name preallocated tensors to write into (reused between
   * calls: fresh memory is not free), or restrict which outputs are computed. */
  async run(feeds: Record<string, Feed>, outputs?: readonly string[] | Record<string, Tensor>): Promise<Record<string, Tensor>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(feeds)) ortFeeds[k] = v instanceof Tensor ? toOrtTensor(v) : v;
    let result: ort.InferenceSession.ReturnType;
    if (outputs === undefined) result = await this.ort.run(ortFeeds);
    else if (Array.isArray(outputs)) result = await this.ort.run(ortFeeds, outputs as string[]);
    else {
      const fetches: Record<string, ort.Tensor> = {};
      for (const [k, v] of Object.entries(outputs as Record<string, Tensor>)) fetches[k] = toOrtTensor(v);
      await this.ort.run(ortFeeds, fetches);
      return outputs as Record<string, Tensor>;
    }
    const out: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(result)) out[k] = fromOrtTensor(v);
    return out;
  }

  /** Runs `fn` once, when the session is released (the compile cache's lease on the model
   * files the session maps). */
  onRelease(fn: () => void): void {
    this.releaseHooks.push(fn);
  }

  async release(): Promise<void> {
    try {
      await this.ort.release();
    } finally {
      for (const fn of this.releaseHooks.splice(0)) fn();
    }
  }
}

const probes = new Map<Provider, Promise<string | null>>();

/** null when `provider` can start on this machine, else ORT's reason (cached per process). */
export function probeProvider(provider: Provider): Promise<string | null> {
  let p = probes.get(provider);
  if (!p) {
    p = (async () => {
      const g = new Graph('probe');
      g.output('y', op.identity(g.input('x', 'f32', [1])));
      const model = exportOnnx(g);
      try {
        const s = await Session.create(model, { provider });
        await s.release();
        return null;
      } catch (err) {
        return (err as Error).message;
      }
    })();
    probes.set(provider, p);
  }
  return p;
}

function isProviderFailure(message: string): boolean {
  return /adapter|provider|shared library|backend|cuda|webgpu|vulkan|dawn|device/i.test(message);
}
