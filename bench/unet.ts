// Full-size SD 1.5 UNet on the CPU provider: cold load time, one CFG step (batch 2) at
// 512x512 (64x64 latents), peak RSS. Weights are random (the real SD 1.5 config and
// parameter names, 860M parameters) and written by this benchmark as an fp16 safetensors
// file, as fp16 checkpoints are on disk; no download.
//
//   npx tsx bench/unet.ts [--steps 3] [--prepack on|off] [--opt all|extended|basic]
//                         [--threads N] [--size 512] [--keep DIR] [--cache on|off] [--profile PREFIX]
//
// --cache on (default) measures what the product does: a first process builds the compile
// cache entry (ORT-optimised model with pre-packed weights, once per checkpoint; its load
// time is printed as the cache miss), then a fresh process loads from it and runs the steps.
// --cache off exports the f16 weights and lets ORT optimise them at load, every time.
//
// The weights are generated in one child process and measured in a fresh one, so the load
// time is a cold start and the peak RSS is the measuring process's own.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SD15_CONFIGS, type UNetConfig } from '../src/models/checkpoint/configs.ts';
import { unetKeyMap } from '../src/models/checkpoint/sd15-keymap.ts';
import { MappedWeightSource, type StoredTensor } from '../src/models/checkpoint/weight-source.ts';
import { writeOnnx } from '../src/graph/onnx.ts';
import { UnetSession } from '../src/models/sessions.ts';
import { buildUnet } from '../src/models/unet.ts';
import { Session } from '../src/runtime/session.ts';
import { SafetensorsFile, writeSafetensors } from '../src/tensor/safetensors.ts';
import { Tensor } from '../src/tensor/tensor.ts';
import { productEnv } from './_product-env.ts';
import { randomF16Weights, xorshift } from './_random-weights.ts';

const WEIGHTS = 'diffusion_pytorch_model.fp16.safetensors';


/** Random fp16 weights with torch-default-like scales (uniform ±1/sqrt(fan_in); norm
 * weights 1, biases small), so activations stay finite through 25 blocks. */
function generate(dir: string, cfg: UNetConfig): void {
  const tensors = randomF16Weights(unetKeyMap(cfg), 1234);
  writeSafetensors(join(dir, WEIGHTS), tensors);
}

function randn(n: number, seed: number, scale = 1): Float32Array {
  const rand = xorshift(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const u = (rand() + 1) / 2 ** 32;
    const v = rand() / 2 ** 32;
    const r = Math.sqrt(-2 * Math.log(u)) * scale;
    out[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < n) out[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  return out;
}

/** CPU seconds (user + system) of this process: on a shared machine, wall time measures
 * the neighbours too. */
function cpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

function minorFaults(): number {
  return Number(readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ')[7]);
}

function peakRssBytes(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : process.resourceUsage().maxRSS * 1024;
}

async function measure(dir: string, o: { steps: number; prepack: boolean; opt: 'all' | 'extended' | 'basic'; threads?: number; size: number; profile?: string; cache?: string }): Promise<void> {
  const cfg = SD15_CONFIGS.unet;
  const t0 = performance.now();
  const file = SafetensorsFile.open(join(dir, WEIGHTS));
  const entries = new Map<string, StoredTensor>();
  for (const key of file.keys()) entries.set(key, { file, key, shape: file.info(key).shape });
  const weights = new MappedWeightSource('benchmark UNet', entries);
  // --cache: UnetSession.create with an export cache (a miss exports with f32 weights and
  // saves ORT's optimised model; a hit maps it). Otherwise f16 weights linked, Casts and
  // layout changes done by ORT at every load.
  const sessionOpts = {
    prepack: o.prepack,
    optimization: o.opt,
    ...(o.threads ? { threads: o.threads } : {}),
    ...(o.profile ? { profilePrefix: o.profile } : {}),
  };
  let session: UnetSession;
  let exportS = 0;
  let cacheHit = false;
  const c0 = cpu();
  if (o.cache) {
    cacheHit = existsSync(o.cache) && readdirSync(o.cache).some((f) => /^unet-[0-9a-f]{32}$/.test(f));
    session = await UnetSession.create(cfg, weights, { ...sessionOpts, cacheDir: o.cache });
  } else {
    const { modelPath } = writeOnnx(buildUnet(cfg, weights), join(dir, 'onnx'));
    exportS = (performance.now() - t0) / 1000;
    session = UnetSession.fromSession(await Session.create(modelPath, sessionOpts), cfg);
  }
  const loadS = (performance.now() - t0) / 1000;
  const loadCpu = cpu() - c0;
  const rssAfterLoad = peakRssBytes();
  const lat = o.size / 8;
  const latents = Tensor.f32(randn(2 * 4 * lat * lat, 1), [2, 4, lat, lat]);
  const states = Tensor.f32(randn(2 * 77 * cfg.cross_attention_dim, 2, 0.5), [2, 77, cfg.cross_attention_dim]);
  const out = Tensor.zeros('f32', [2, 4, lat, lat]);
  const stepS: number[] = [];
  const stepCpu: number[] = [];
  const stepFaults: number[] = [];
  for (let i = 0; i < o.steps; i++) {
    const s = performance.now();
    const c = cpu();
    const f = minorFaults();
    await session.run(latents, [500, 500], states, out);
    stepS.push((performance.now() - s) / 1000);
    stepCpu.push(cpu() - c);
    stepFaults.push(minorFaults() - f);
  }
  const data = out.data as Float32Array;
  const finite = data.every((v) => Number.isFinite(v));
  const steady = stepS.slice(1).sort((a, b) => a - b);
  console.log(
    JSON.stringify({
      size: `${o.size}x${o.size}`,
      batch: 2,
      prepack: o.prepack,
      optimization: o.opt,
      threads: o.threads ?? 'all cores',
      weights: o.cache ? (cacheHit ? 'export cache hit (ORT-optimised f32 model mapped)' : 'export cache miss (f32 export + ORT optimisation, saved)') : 'f16 linked, Cast folded by ORT',
      load_s: +loadS.toFixed(2),
      load_export_s: +exportS.toFixed(2),
      load_cpu_s: +loadCpu.toFixed(2),
      step_cpu_s: stepCpu.map((s) => +s.toFixed(2)),
      step_minor_faults: stepFaults,
      load_avg: loadavg()[0]!.toFixed(1),
      first_step_s: stepS.length ? +stepS[0]!.toFixed(2) : null,
      step_s: steady.length ? +steady[Math.floor(steady.length / 2)]!.toFixed(2) : null,
      steps_s: stepS.map((s) => +s.toFixed(2)),
      peak_rss_gb_after_load: +(rssAfterLoad / 2 ** 30).toFixed(2),
      peak_rss_gb: +(peakRssBytes() / 2 ** 30).toFixed(2),
      output_finite: finite,
    }),
  );
  if (o.profile) session.session.ort.endProfiling();
  await session.release();
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      steps: { type: 'string', default: '3' },
      prepack: { type: 'string', default: 'on' },
      opt: { type: 'string', default: 'all' },
      threads: { type: 'string' },
      size: { type: 'string', default: '512' },
      keep: { type: 'string' },
      profile: { type: 'string' },
      cache: { type: 'string', default: 'on' },
      role: { type: 'string' },
      dir: { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    console.log('npx tsx bench/unet.ts [--steps 3] [--prepack on|off] [--opt all|extended|basic] [--threads N] [--size 512] [--keep DIR] [--cache on|off] [--profile PREFIX]');
    return;
  }
  if (values.role === 'generate') return generate(values.dir!, SD15_CONFIGS.unet);
  if (values.role === 'measure') {
    return measure(values.dir!, {
      steps: Number(values.steps),
      prepack: values.prepack !== 'off',
      opt: values.opt as 'all',
      ...(values.threads ? { threads: Number(values.threads) } : {}),
      size: Number(values.size),
      ...(values.profile ? { profile: values.profile } : {}),
      ...(values.cache !== 'off' ? { cache: join(values.dir!, 'export-cache') } : {}),
    });
  }
  const dir = values.keep ?? mkdtempSync(join(tmpdir(), 'redline-bench-unet-'));
  mkdirSync(dir, { recursive: true });
  const self = new URL(import.meta.url).pathname;
  const child = (role: string, extra: string[] = []): void => {
    const args = ['--import', 'tsx', self, '--role', role, '--dir', dir, ...process.argv.slice(2).filter((a, i, all) => a !== '--keep' && all[i - 1] !== '--keep'), ...extra];
    const r = spawnSync(process.execPath, args, { stdio: 'inherit', env: productEnv() });
    if (r.status !== 0) throw new Error(`bench ${role} failed (${r.status})`);
  };
  try {
    if (!existsSync(join(dir, WEIGHTS))) {
      const t = performance.now();
      child('generate');
      console.error(`generated random fp16 SD 1.5 UNet weights in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    }
    writeFileSync(join(dir, 'config.json'), JSON.stringify(SD15_CONFIGS.unet, null, 2));
    if (values.cache !== 'off') {
      rmSync(join(dir, 'export-cache'), { recursive: true, force: true });
      child('measure', ['--steps', '0']); // writes the export cache
    }
    child('measure'); // a fresh process: cold start (from the cache with --cache)
  } finally {
    if (!values.keep) rmSync(dir, { recursive: true, force: true });
  }
}

await main();
