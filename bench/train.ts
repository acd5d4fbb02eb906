// One LoRA training step (forward + loss + backward, one ORT run) on the full-size SD 1.5
// UNet at 512x512 (64x64 latents), batch 1, rank-16 LoRA on the attention projections
// (to_q/to_k/to_v/to_out.0, 128 modules), text encoder outputs fed as cached states, CPU
// provider. Weights are random (SD 1.5 config and parameter names, fp16 like checkpoints on
// disk). Each checkpointing mode runs in its own fresh process, so peak RSS is its own.
//
//   npx tsx bench/train.ts [--steps 2] [--size 512] [--checkpoint none,blocks,modules] [--threads N]

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { SD15_CONFIGS, type SD15Configs } from '../src/models/checkpoint/configs.ts';
import { unetKeyMap } from '../src/models/checkpoint/sd15-keymap.ts';
import type { WeightSource } from '../src/models/weights.ts';
import { f32ToF16Bits } from '../src/tensor/half.ts';
import { Tensor } from '../src/tensor/tensor.ts';
import { AdamW } from '../src/train/optim/adamw.ts';
import { buildLoraStep, type CheckpointMode, type StepModel } from '../src/train/step/graphs.ts';
import { initLoraParams, loraTargets } from '../src/train/step/lora.ts';
import { addNoise } from '../src/train/step/noise.ts';
import { TrainStepSession } from '../src/train/step/session.ts';
import { xorshift } from './_random-weights.ts';


/** Random fp16 UNet weights generated on demand (uniform ±1/sqrt(fan_in), norms 1). */
class RandomUnet implements WeightSource {
  private readonly entries = new Map(unetKeyMap(SD15_CONFIGS.unet).map((e) => [e.diffusers, e.shape]));
  names(): string[] {
    return [...this.entries.keys()];
  }
  has(name: string): boolean {
    return this.entries.has(name);
  }
  shape(name: string): number[] {
    return [...this.entries.get(name)!];
  }
  dtype(): 'f16' {
    return 'f16';
  }
  get(name: string): Tensor {
    const shape = this.shape(name);
    const n = shape.reduce((a, b) => a * b, 1);
    const bits = new Uint16Array(n);
    if (/norm/.test(name) && shape.length === 1 && name.endsWith('.weight')) return new Tensor('f16', shape, bits.fill(f32ToF16Bits(1)));
    const rand = xorshift(n + name.length * 7919);
    const a = shape.length > 1 ? 1 / Math.sqrt(n / shape[0]!) : 0.02;
    const table = new Uint16Array(4096);
    for (let i = 0; i < table.length; i++) table[i] = f32ToF16Bits(((rand() / 2 ** 32) * 2 - 1) * a);
    for (let i = 0; i < n; i++) bits[i] = table[rand() & 4095]!;
    return new Tensor('f16', shape, bits);
  }
}

function randn(n: number, seed: number): Float32Array {
  const rand = xorshift(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = (rand() + 1) / 2 ** 32;
    const v = rand() / 2 ** 32;
    const r = Math.sqrt(-2 * Math.log(u));
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

function peakRssGb(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 2 ** 20 : process.resourceUsage().maxRSS / 2 ** 20;
}

async function measure(mode: CheckpointMode, steps: number, size: number, threads?: number): Promise<void> {
  const configs = SD15_CONFIGS as SD15Configs;
  const unet = new RandomUnet();
  const model: StepModel = { configs, components: { unet, text_encoder: unet, vae: unet } };
  const targets = loraTargets(model, { unet: 'attention', textEncoder: false, rank: 16, alpha: 16 });
  const lat = size / 8;
  const t0 = performance.now();
  const step = buildLoraStep(model, targets, { textEncoder: 'input', checkpoint: mode, fixed: { batch: 1, height: lat, width: lat } });
  const buildS = (performance.now() - t0) / 1000;
  const session = await TrainStepSession.create(step, threads ? { threads } : {});
  const loadS = (performance.now() - t0) / 1000;
  const params = initLoraParams(targets, 1);
  // B = 0 at init gives zero A-gradients; a small B exercises the whole backward
  const rb = randn(1 << 16, 9);
  for (const [k, v] of params) if (k.endsWith('lora_B.weight')) for (let i = 0; i < v.length; i++) v[i] = rb[i & 0xffff]! * 1e-3;
  const opt = new AdamW(params, { lr: 1e-4 });
  const x0 = randn(4 * lat * lat, 1);
  const eps = randn(4 * lat * lat, 2);
  const states = randn(77 * configs.unet.cross_attention_dim, 3).map((v) => v * 0.5);
  const times: number[] = [];
  const losses: number[] = [];
  let optS = 0;
  for (let i = 0; i < steps; i++) {
    const t = [100 + 300 * i];
    const s = performance.now();
    const r = await session.run({ noisyLatents: addNoise(x0, eps, t), timesteps: t, encoderStates: states, target: eps, latentSize: [lat, lat] }, params);
    times.push((performance.now() - s) / 1000);
    const o = performance.now();
    opt.step(r.grads);
    optS = (performance.now() - o) / 1000;
    losses.push(r.loss);
  }
  const sorted = [...times].sort((a, b) => a - b);
  console.log(JSON.stringify({
    size: `${size}x${size}`, batch: 1, lora: 'rank 16 on attention (to_q/k/v/out.0)', modules: targets.length,
    checkpoint: mode, nodes: step.graph.nodes.length, build_s: +buildS.toFixed(1), load_s: +loadS.toFixed(1),
    step_s: times.map((x) => +x.toFixed(1)), median_step_s: +sorted[Math.floor(sorted.length / 2)]!.toFixed(1),
    adamw_s: +optS.toFixed(3), losses: losses.map((l) => +l.toFixed(4)), peak_rss_gb: +peakRssGb().toFixed(2),
    threads: threads ?? 'all cores',
  }));
  await session.release();
}

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '2' },
    size: { type: 'string', default: '512' },
    checkpoint: { type: 'string', default: 'none,blocks' },
    threads: { type: 'string' },
    role: { type: 'string' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  console.log('npx tsx bench/train.ts [--steps 2] [--size 512] [--checkpoint none,blocks,modules] [--threads N]');
} else if (values.role) {
  await measure(values.role as CheckpointMode, Number(values.steps), Number(values.size), values.threads ? Number(values.threads) : undefined);
} else {
  for (const mode of values.checkpoint!.split(',')) {
    const args = ['--import', 'tsx', new URL(import.meta.url).pathname, '--role', mode, '--steps', values.steps!, '--size', values.size!, ...(values.threads ? ['--threads', values.threads] : [])];
    const r = spawnSync(process.execPath, args, { stdio: 'inherit' });
    if (r.status !== 0) console.error(`checkpoint=${mode}: failed (exit ${r.status}, signal ${r.signal})`);
  }
}
