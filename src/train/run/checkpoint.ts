// Run checkpoints: everything a resumed run needs to continue exactly as an uninterrupted
// one: trainable tensors, optimizer moments and step counts, every RNG stream, where the
// run is in its epoch (and the order stream's state when the epoch began, to rebuild the
// epoch's batch order), and a digest of the settings that must not change across a resume.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RedlineError } from '../../errors.ts';
import { readSafetensors, writeSafetensors } from '../../tensor/safetensors.ts';
import { Tensor } from '../../tensor/tensor.ts';
import type { RngState, RngStreamName } from '../data/rng.ts';
import type { AdamWState } from '../optim/adamw.ts';

export const CHECKPOINT_VERSION = 1;

export interface RunPosition {
  /** Optimizer steps done. */
  step: number;
  epoch: number;
  /** Index of the next batch within the epoch. */
  batchIndex: number;
  /** The order stream's state when the epoch's batches were drawn. */
  epochOrderState: RngState;
}

export interface RunCheckpoint {
  version: number;
  position: RunPosition;
  rng: Record<RngStreamName, RngState>;
  /** Optimizer group -> step count (moments are in optimizer.safetensors). */
  optimizerSteps: Record<string, number>;
  settingsDigest: string;
  trainingStartedAt: number;
  elapsedSeconds: number;
}

export function saveCheckpoint(dir: string, ck: RunCheckpoint, params: ReadonlyMap<string, Float32Array>, optimizers: Record<string, AdamWState>): void {
  const partial = `${dir}.partial`;
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial, { recursive: true });
  const p = new Map<string, Tensor>();
  for (const [k, v] of params) p.set(k, Tensor.f32(new Float32Array(v)));
  writeSafetensors(join(partial, 'params.safetensors'), p);
  const o = new Map<string, Tensor>();
  for (const [group, s] of Object.entries(optimizers)) {
    for (const [k, v] of s.expAvg) o.set(`${group}/exp_avg/${k}`, Tensor.f32(new Float32Array(v)));
    for (const [k, v] of s.expAvgSq) o.set(`${group}/exp_avg_sq/${k}`, Tensor.f32(new Float32Array(v)));
  }
  writeSafetensors(join(partial, 'optimizer.safetensors'), o);
  writeFileSync(join(partial, 'state.json'), JSON.stringify(ck, null, 1) + '\n');
  rmSync(dir, { recursive: true, force: true });
  renameSync(partial, dir);
}

export interface LoadedCheckpoint {
  state: RunCheckpoint;
  params: Map<string, Float32Array>;
  optimizers: Record<string, AdamWState>;
}

export function loadCheckpoint(dir: string): LoadedCheckpoint {
  const stateFile = join(dir, 'state.json');
  if (!existsSync(stateFile)) throw new RedlineError('train_resume', `${dir} is not a Redline training checkpoint (no state.json).`, 'Pass a folder under OUTPUT_DIR/checkpoints/.');
  let state: RunCheckpoint;
  try {
    state = JSON.parse(readFileSync(stateFile, 'utf8')) as RunCheckpoint;
  } catch {
    throw new RedlineError('train_resume', `${stateFile} is not valid JSON.`);
  }
  if (state.version !== CHECKPOINT_VERSION) throw new RedlineError('train_resume', `${dir} is a version ${state.version} checkpoint; this Redline reads version ${CHECKPOINT_VERSION}.`);
  const params = new Map<string, Float32Array>();
  for (const [k, t] of readSafetensors(join(dir, 'params.safetensors'))) params.set(k, new Float32Array(t.toFloat32()));
  const optimizers: Record<string, AdamWState> = {};
  for (const [k, t] of readSafetensors(join(dir, 'optimizer.safetensors'))) {
    const m = /^([^/]+)\/(exp_avg|exp_avg_sq)\/(.+)$/.exec(k);
    if (!m) continue;
    const g = (optimizers[m[1]!] ??= { step: state.optimizerSteps[m[1]!] ?? 0, expAvg: new Map(), expAvgSq: new Map() });
    (m[2] === 'exp_avg' ? g.expAvg : g.expAvgSq).set(m[3]!, new Float32Array(t.toFloat32()));
  }
  for (const g of Object.keys(state.optimizerSteps)) optimizers[g] ??= { step: state.optimizerSteps[g]!, expAvg: new Map(), expAvgSq: new Map() };
  return { state, params, optimizers };
}
