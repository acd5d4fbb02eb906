// The sampling loop with the latents kept as ORT tensors between runs: the UNet's output
// goes straight into the step graph (CFG combine + sampler update), whose `model_input`
// output is the next UNet sample. On webgpu/cuda, sessions created with
// `preferredOutputLocation: 'gpu-buffer'` keep every one of these on the GPU; the CPU
// only uploads a few scalars (and Euler a's noise) per step and copies the latents back
// once per image. On the CPU provider the same code passes plain tensors along.
import * as ort from 'onnxruntime-node';
import { RedlineError } from '../../errors.ts';
import { Graph } from '../../graph/graph.ts';
import { exportOnnx } from '../../graph/onnx.ts';
import * as op from '../../graph/ops.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { type Provider, Session, toOrtTensor } from '../session.ts';

/** What the loop needs from a sampler run (src/sampling/graphs' SamplerGraphPlan is one). */
export interface DeviceStepPlan {
  readonly steps: number;
  timestep(i: number): number;
  /** Per-step CPU inputs of the step graph (scalars; noise for stochastic samplers). */
  feeds(i: number, latentShape: readonly number[], noise?: { fill(out: Float32Array): void }): Record<string, Tensor>;
  /** Step-graph outputs fed back as its inputs next step ({latents_next: 'latents', ...}). */
  readonly carry: Readonly<Record<string, string>>;
  initialHistory(length: number): Record<string, Float32Array>;
  initialModelInput(latents: Float32Array): Float32Array;
}

export interface UnetNames {
  sample: string;
  timestep: string;
  context: string;
  output: string;
}

/** The UNet graph's names (src/models/unet.ts, as src/pipeline/generate.ts feeds it). */
export const UNET_NAMES: UnetNames = { sample: 'sample', timestep: 'timestep', context: 'encoder_hidden_states', output: 'out_sample' };

export interface DeviceLoopRun {
  /** The UNet; on a GPU created with preferredOutputLocation 'gpu-buffer'. */
  unet: Session | ort.InferenceSession;
  /** The step graph built by plan (guidance 'stacked'), see createStepSession. */
  step: Session | ort.InferenceSession;
  plan: DeviceStepPlan;
  /** Starting latents [B, 4, h, w] (x_T * initNoiseSigma, or img2img's noised latents). */
  latents: Float32Array;
  latentShape: readonly number[];
  /** Conditioning stacked as the UNet batch: [uncond x B; cond x B] -> [2B, tokens, width]. */
  context: Tensor;
  cfgScale: number;
  noise?: { fill(out: Float32Array): void };
  names?: UnetNames;
  signal?: AbortSignal;
  /** After step i (1-based count); `x0` copies the preview back only when called. */
  onStep?: (step: number, steps: number, x0: () => Promise<Float32Array>) => void;
}

export interface DeviceLoopResult {
  latents: Float32Array;
  /** Where the UNet and step outputs lived ('cpu' on the CPU provider; 'gpu-buffer' is the
   * point of the loop on a GPU, checked by the H100 session). */
  outputLocations: string[];
  /** Device-to-host copies made (1 per batch without previews). */
  copiesBack: number;
}

const ortSession = (s: Session | ort.InferenceSession): ort.InferenceSession => (s instanceof Session ? s.ort : s);

/** ORT session options for sessions whose outputs should stay on the device. */
export function deviceOutputOptions(provider: Provider): Pick<ort.InferenceSession.SessionOptions, 'preferredOutputLocation'> {
  return provider === 'cpu' ? {} : { preferredOutputLocation: 'gpu-buffer' };
}

/** A step-graph session: tiny, so no tuning beyond the provider and output location. */
export async function createStepSession(model: Uint8Array, provider: Provider): Promise<ort.InferenceSession> {
  try {
    return await ort.InferenceSession.create(model, {
      executionProviders: [provider],
      graphOptimizationLevel: 'all',
      intraOpNumThreads: 1,
      ...deviceOutputOptions(provider),
    });
  } catch (err) {
    throw new RedlineError('provider_unavailable', `The ${provider} execution provider could not start the sampler step graph: ${(err as Error).message.split('\n')[0]}.`, 'Run `redline doctor` to see which providers this machine can start.');
  }
}

/** Reads a tensor back to the CPU: free for CPU tensors, else one copy. */
export class HostReader {
  /** One Identity session per tensor rank (GPU tensors cannot be reshaped). */
  private readonly copyOut = new Map<number, ort.InferenceSession>();
  copies = 0;
  constructor(private readonly provider: Provider) {}

  async read(t: ort.Tensor): Promise<Float32Array> {
    if (t.location === 'cpu') return t.data as Float32Array;
    this.copies++;
    // Node's binding cannot map a GPU buffer for reading; an Identity run whose output
    // location is the CPU makes ORT do the device-to-host copy.
    const rank = t.dims.length;
    let session = this.copyOut.get(rank);
    if (!session) {
      const g = new Graph('copy_out');
      g.output('y', op.identity(g.input('x', 'f32', t.dims.map((_, i) => `d${i}`))));
      session = await ort.InferenceSession.create(exportOnnx(g), { executionProviders: [this.provider], preferredOutputLocation: 'cpu' });
      this.copyOut.set(rank, session);
    }
    const out = await session.run({ x: t });
    return out.y!.data as Float32Array;
  }

  async release(): Promise<void> {
    for (const s of this.copyOut.values()) await s.release();
    this.copyOut.clear();
  }
}

const disposeIfDevice = (t: ort.Tensor | undefined): void => {
  if (t && t.location !== 'cpu') t.dispose();
};

/** Runs every step of one batch; returns its final latents (one copy back). */
export async function runDeviceLoop(run: DeviceLoopRun, provider: Provider = 'cpu'): Promise<DeviceLoopResult> {
  const names = run.names ?? UNET_NAMES;
  const unet = ortSession(run.unet);
  const step = ortSession(run.step);
  const shape = [...run.latentShape];
  const n = shape.reduce((a, b) => a * b, 1);
  if (run.latents.length !== n) throw new Error(`latents have ${run.latents.length} values, shape [${shape.join(', ')}] needs ${n}`);
  const batch2 = 2 * shape[0]!;
  if (run.context.shape[0] !== batch2) {
    throw new RedlineError('device_loop_context', `The device loop needs the conditioning stacked as [uncond x B; cond x B] (batch ${batch2}), got batch ${run.context.shape[0]}.`, 'Pad both prompts to the same number of 77-token chunks, or use the CPU pipeline.');
  }
  const reader = new HostReader(provider);
  const locations = new Set<string>();
  const context = toOrtTensor(run.context);
  const cfg = new ort.Tensor('float32', Float32Array.of(run.cfgScale), [1]);
  const timestep = new Float32Array(batch2);
  let state: Record<string, ort.Tensor> = { latents: new ort.Tensor('float32', Float32Array.from(run.latents), shape) };
  for (const [k, v] of Object.entries(run.plan.initialHistory(n))) state[k] = new ort.Tensor('float32', v, shape);
  const first = run.plan.initialModelInput(run.latents);
  let sample: ort.Tensor = new ort.Tensor('float32', Float32Array.of(...first, ...first), [batch2, ...shape.slice(1)]);
  let lastX0: ort.Tensor | undefined;
  try {
    for (let i = 0; i < run.plan.steps; i++) {
      if (run.signal?.aborted) throw new RedlineError('cancelled', 'The generation was cancelled.');
      timestep.fill(run.plan.timestep(i));
      const pred = (await unet.run({ [names.sample]: sample, [names.timestep]: new ort.Tensor('float32', timestep, [batch2]), [names.context]: context }, [names.output]))[names.output]!;
      locations.add(pred.location);
      const feeds: Record<string, ort.Tensor> = { ...state, noise_pred: pred, cfg };
      for (const [k, v] of Object.entries(run.plan.feeds(i, shape, run.noise))) feeds[k] = toOrtTensor(v);
      const out = await step.run(feeds);
      for (const v of Object.values(out)) locations.add(v.location);
      disposeIfDevice(pred);
      disposeIfDevice(sample);
      for (const v of Object.values(state)) disposeIfDevice(v);
      disposeIfDevice(lastX0);
      const next: Record<string, ort.Tensor> = {};
      for (const [from, to] of Object.entries(run.plan.carry)) next[to] = out[from]!;
      state = next;
      sample = out.model_input!;
      lastX0 = out.x0;
      if (run.onStep) {
        const x0 = lastX0!;
        run.onStep(i + 1, run.plan.steps, () => reader.read(x0));
      }
    }
    const latents = Float32Array.from(await reader.read(state.latents!));
    return { latents, outputLocations: [...locations], copiesBack: reader.copies };
  } finally {
    disposeIfDevice(sample);
    for (const v of Object.values(state)) disposeIfDevice(v);
    disposeIfDevice(lastX0);
    await reader.release();
  }
}

/** What this onnxruntime-node build offers for device-resident tensors (no GPU needed). */
export function gpuBufferApis(): { fromGpuBuffer: boolean; dispose: boolean; tensorLocation: boolean } {
  const probe = new ort.Tensor('float32', new Float32Array(1), [1]);
  return {
    fromGpuBuffer: typeof (ort.Tensor as unknown as { fromGpuBuffer?: unknown }).fromGpuBuffer === 'function',
    dispose: typeof probe.dispose === 'function',
    tensorLocation: probe.location === 'cpu',
  };
}
