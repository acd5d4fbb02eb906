// Runs a step graph on ONNX Runtime: exported once (weights linked from the checkpoint's
// own files, not copied), then one session run per step with the trainable tensors fed
// from the caller's Float32Arrays and every gradient fetched.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { RedlineError } from '../../errors.ts';
import { writeOnnx } from '../../graph/onnx.ts';
import { Session, type SessionOptions } from '../../runtime/session.ts';
import type { StepGraph } from './graphs.ts';

export interface StepBatch {
  /** [B, 4, h, w] noisy latents (noise.ts addNoise), flattened. */
  noisyLatents?: Float32Array;
  /** One integer DDPM timestep per sample. */
  timesteps?: readonly number[];
  /** [B, 77] token ids (text encoder in the graph). */
  inputIds?: readonly (readonly number[])[];
  /** [B, 77, 768] encoder states (textEncoder: 'input'). */
  encoderStates?: Float32Array;
  /** [B, 4, h, w] regression target (the noise). */
  target?: Float32Array;
  /** [B] per-sample loss weights (min-SNR, prior loss); needs lossWeights at build. */
  lossWeights?: Float32Array;
  /** Latent height and width (h, w). */
  latentSize?: readonly [number, number];
  /** VAE step: [B, 4, h, w] latents and [B, 3, 8h, 8w] target image. */
  z?: Float32Array;
  targetImage?: Float32Array;
}

export interface StepResult {
  loss: number;
  /** param name (and input name, for inputGrads) -> gradient. */
  grads: Map<string, Float32Array>;
  /** Other outputs ('model_pred', 'decoded') when the graph has them. */
  extra: Map<string, Float32Array>;
}

export class TrainStepSession {
  private constructor(
    readonly step: StepGraph,
    private readonly session: Session,
    private readonly dir: string,
  ) {}

  static async create(step: StepGraph, opts: SessionOptions = {}): Promise<TrainStepSession> {
    const dir = mkdtempSync(join(tmpdir(), `redline-${step.kind}-`));
    try {
      const { modelPath } = writeOnnx(step.graph, dir);
      return new TrainStepSession(step, await Session.create(modelPath, opts), dir);
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
  }

  private feeds(batch: StepBatch): Record<string, ort.Tensor> {
    const need = new Set(this.step.feeds);
    const out: Record<string, ort.Tensor> = {};
    const miss = (what: string): never => {
      throw new RedlineError('train_input', `This ${this.step.kind} step needs ${what}.`);
    };
    if (need.has('z') || need.has('target_img')) {
      const z = batch.z ?? miss('z');
      const [h, w] = batch.latentSize ?? miss('latentSize');
      const b = z.length / (4 * h * w);
      if (!Number.isInteger(b)) throw new RedlineError('train_input', `z holds ${z.length} values, not a multiple of 4x${h}x${w}.`);
      out.z = new ort.Tensor('float32', z, [b, 4, h, w]);
      out.target_img = new ort.Tensor('float32', batch.targetImage ?? miss('targetImage'), [b, 3, 8 * h, 8 * w]);
      return out;
    }
    const t = batch.timesteps ?? miss('timesteps');
    const b = t.length;
    const [h, w] = batch.latentSize ?? miss('latentSize');
    const lat = [b, 4, h, w];
    const size = b * 4 * h * w;
    const check = (name: string, a: Float32Array, n: number): Float32Array => {
      if (a.length !== n) throw new RedlineError('train_input', `${name} holds ${a.length} values, ${n} expected for batch ${b} at ${h}x${w} latents.`);
      return a;
    };
    out.noisy_latents = new ort.Tensor('float32', check('noisyLatents', batch.noisyLatents ?? miss('noisyLatents'), size), lat);
    out.timestep = new ort.Tensor('float32', Float32Array.from(t), [b]);
    out.target = new ort.Tensor('float32', check('target', batch.target ?? miss('target'), size), lat);
    if (need.has('input_ids')) {
      const rows = batch.inputIds ?? miss('inputIds');
      if (rows.length !== b) throw new RedlineError('train_input', `${rows.length} token rows for ${b} timesteps.`);
      const n = rows[0]!.length;
      out.input_ids = new ort.Tensor('int64', BigInt64Array.from(rows.flatMap((r) => r.map((x) => BigInt(x)))), [b, n]);
    }
    if (need.has('encoder_hidden_states')) {
      const e = batch.encoderStates ?? miss('encoderStates');
      const width = this.step.graph.inputs.find((v) => v.name === 'encoder_hidden_states')!.shape[2] as number;
      const seq = e.length / (b * width);
      if (!Number.isInteger(seq)) throw new RedlineError('train_input', `encoderStates holds ${e.length} values, not [${b}, S, ${width}].`);
      out.encoder_hidden_states = new ort.Tensor('float32', e, [b, seq, width]);
    }
    if (need.has('loss_weights')) out.loss_weights = new ort.Tensor('float32', check('lossWeights', batch.lossWeights ?? miss('lossWeights'), b), [b]);
    return out;
  }

  /** One forward + backward. `params` maps every trainable tensor's name to its values. */
  async run(batch: StepBatch, params: ReadonlyMap<string, Float32Array>): Promise<StepResult> {
    const feeds = this.feeds(batch);
    for (const p of this.step.params) {
      const v = params.get(p.name);
      if (!v) throw new RedlineError('train_input', `No values for trainable tensor ${p.name}.`);
      const n = p.shape.reduce((a, b) => a * b, 1);
      if (v.length !== n) throw new RedlineError('train_input', `${p.name} holds ${v.length} values, shape [${p.shape.join(', ')}] needs ${n}.`);
      feeds[p.name] = new ort.Tensor('float32', v, p.shape);
    }
    const out = await this.session.ort.run(feeds);
    const grads = new Map<string, Float32Array>();
    const extra = new Map<string, Float32Array>();
    for (const [k, v] of Object.entries(out)) {
      if (k.startsWith('grad.')) grads.set(k.slice(5), v.data as Float32Array);
      else if (k !== 'loss') extra.set(k, v.data as Float32Array);
    }
    return { loss: Number((out.loss!.data as Float32Array)[0]), grads, extra };
  }

  async release(): Promise<void> {
    await this.session.release();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
