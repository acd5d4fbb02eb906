// End-to-end txt2img on the full-size SD 1.5 architecture (text encoder, UNet, VAE at SD
// 1.5's configs, random weights, fp16 safetensors in a diffusers folder), CPU provider,
// through the code a user runs: StableDiffusionModel.load -> Generator.generate -> PNG.
// Reports cold load, total generation, seconds per step, and the time spent outside the
// UNet (text encoding, VAE decode, PNG encode, and the rest: sampler arithmetic, CFG, RNG),
// each as wall and CPU seconds, plus peak RSS and the load average at start.
//
//   npx tsx bench/generate.ts [--size 256|512] [--steps 20] [--threads N] [--keep DIR]
//
// The weights are written by one child process and measured in a fresh one with an empty
// compile cache, so the load is a true cold start (export + ORT optimisation) and the peak
// RSS is the measuring process's own. The tokenizer is copied from the golden data at run
// time (REDLINE_GOLDEN_DIR or ../shared/golden), never stored in the repo.

import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { SD15_CONFIGS } from '../src/models/checkpoint/configs.ts';
import { type Component, keyMapFor } from '../src/models/checkpoint/sd15-keymap.ts';
import { Generator } from '../src/pipeline/generate.ts';
import { encodePng } from '../src/pipeline/image.ts';
import { StableDiffusionModel } from '../src/pipeline/model.ts';
import type { Session } from '../src/runtime/session.ts';
import { writeSafetensors } from '../src/tensor/safetensors.ts';
import { randomF16Weights } from './_random-weights.ts';
import { productEnv } from './_product-env.ts';

const WEIGHT_FILES: Record<Component, string> = {
  unet: 'diffusion_pytorch_model.fp16.safetensors',
  vae: 'diffusion_pytorch_model.fp16.safetensors',
  text_encoder: 'model.fp16.safetensors',
};
const COMPONENTS: Component[] = ['text_encoder', 'unet', 'vae'];
// Procedural, neutral prompt: the benchmark measures speed, the text only sets token counts.
const PROMPT = 'a gradient of soft colours over a grid of geometric shapes, studio lighting, detailed';
const NEGATIVE = 'blurry, low contrast';


/** Random fp16 weights with torch-default-like scales (uniform ±1/sqrt(fan_in); norm
 * weights 1, biases small), so activations stay finite through every block (as bench/unet.ts). */
function generateComponent(dir: string, component: Component, seed: number): void {
  const cfg = SD15_CONFIGS[component];
  const tensors = randomF16Weights(keyMapFor(component, cfg), seed);
  mkdirSync(join(dir, component), { recursive: true });
  writeSafetensors(join(dir, component, WEIGHT_FILES[component]), tensors);
  writeFileSync(join(dir, component, 'config.json'), JSON.stringify(cfg, null, 2));
}

function generateModel(dir: string): void {
  COMPONENTS.forEach((c, i) => generateComponent(dir, c, 1234 + i));
  mkdirSync(join(dir, 'scheduler'), { recursive: true });
  writeFileSync(join(dir, 'scheduler', 'scheduler_config.json'), JSON.stringify(SD15_CONFIGS.scheduler, null, 2));
  writeFileSync(join(dir, 'model_index.json'), JSON.stringify({ _class_name: 'StableDiffusionPipeline' }, null, 2));
}

function copyTokenizer(dir: string): void {
  const here = dirname(fileURLToPath(import.meta.url));
  const golden = process.env.REDLINE_GOLDEN_DIR ?? resolve(here, '..', '..', 'shared', 'golden');
  const src = join(golden, 'tokenizer');
  for (const f of ['vocab.json', 'merges.txt']) {
    if (!existsSync(join(src, f))) throw new Error(`${join(src, f)} not found: set REDLINE_GOLDEN_DIR to the golden data folder.`);
  }
  mkdirSync(join(dir, 'tokenizer'), { recursive: true });
  // The golden files are read-only and copyFileSync keeps the mode: replace, not overwrite,
  // so a --keep folder can be reused.
  for (const f of ['vocab.json', 'merges.txt']) {
    rmSync(join(dir, 'tokenizer', f), { force: true });
    copyFileSync(join(src, f), join(dir, 'tokenizer', f));
  }
}

/** CPU seconds (user + system, all threads) of this process: on a shared machine, wall
 * time measures the neighbours too. */
function cpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

function peakRssBytes(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : process.resourceUsage().maxRSS * 1024;
}

interface Phase {
  calls: number;
  wall: number;
  cpu: number;
}

/** Times every run() of this session instance (the model and its prompt encoder share it). */
function instrument(session: Session, phase: Phase): void {
  const run = session.run.bind(session);
  session.run = async (...args: Parameters<Session['run']>) => {
    const w = performance.now();
    const c = cpu();
    try {
      return await run(...args);
    } finally {
      phase.calls++;
      phase.wall += (performance.now() - w) / 1000;
      phase.cpu += cpu() - c;
    }
  };
}

const r2 = (x: number): number => +x.toFixed(2);

async function measure(dir: string, o: { size: number; steps: number; threads?: number }): Promise<void> {
  const loadAvg = loadavg().map((x) => +x.toFixed(2));
  const cacheDir = join(dir, 'compile-cache');
  rmSync(cacheDir, { recursive: true, force: true });
  const w0 = performance.now();
  const c0 = cpu();
  const model = await StableDiffusionModel.load(dir, { onnxDir: cacheDir, ...(o.threads ? { threads: o.threads } : {}) });
  const loadWall = (performance.now() - w0) / 1000;
  const loadCpu = cpu() - c0;
  console.error(`loaded in ${loadWall.toFixed(1)} s`);
  const rssAfterLoad = peakRssBytes();

  const te: Phase = { calls: 0, wall: 0, cpu: 0 };
  const unet: Phase = { calls: 0, wall: 0, cpu: 0 };
  const vae: Phase = { calls: 0, wall: 0, cpu: 0 };
  instrument(model.textEncoder, te);
  instrument(model.unet, unet);
  instrument(model.vaeDecoder, vae);

  const stepEnds: number[] = [];
  const stepCpuEnds: number[] = [];
  const g0 = performance.now();
  const gc0 = cpu();
  const [image] = await new Generator(model).generate(
    { prompt: PROMPT, negativePrompt: NEGATIVE, sampler: 'Euler a', steps: o.steps, cfgScale: 7, seed: 1, rng: 'cpu', width: o.size, height: o.size },
    {
      onStep: (e) => {
        stepEnds.push(performance.now());
        stepCpuEnds.push(cpu());
        process.stderr.write(`step ${e.step}/${e.steps} at ${((performance.now() - g0) / 1000).toFixed(1)} s\n`);
      },
    },
  );
  const p0 = performance.now();
  const pc0 = cpu();
  const png = await encodePng(image!.image);
  const pngWall = (performance.now() - p0) / 1000;
  const pngCpu = cpu() - pc0;
  const totalWall = (performance.now() - g0) / 1000;
  const totalCpu = cpu() - gc0;

  // Step i spans from the previous step's end (the first: from the end of text encoding).
  const stepStart = g0 + te.wall * 1000;
  const perStep = stepEnds.map((t, i) => (t - (i === 0 ? stepStart : stepEnds[i - 1]!)) / 1000);
  const perStepCpu = stepCpuEnds.map((c, i) => c - (i === 0 ? gc0 + te.cpu : stepCpuEnds[i - 1]!));
  const samplingWall = (stepEnds.at(-1)! - stepStart) / 1000;
  const outsideWall = totalWall - unet.wall;
  const outsideCpu = totalCpu - unet.cpu;
  const sortedSteps = [...perStep].sort((a, b) => a - b);
  const finite = image!.unit.every((v) => Number.isFinite(v));
  await model.release();
  console.log(
    JSON.stringify(
      {
        model: 'SD 1.5 full size (random fp16 weights, diffusers folder)',
        size: `${o.size}x${o.size}`,
        steps: o.steps,
        sampler: 'Euler a',
        cfg: 7,
        images: 1,
        threads: o.threads ?? 'all cores',
        load_avg_at_start_1_5_15m: loadAvg,
        cold_load_s: r2(loadWall),
        cold_load_cpu_s: r2(loadCpu),
        generation_total_s: r2(totalWall),
        generation_total_cpu_s: r2(totalCpu),
        s_per_step_mean: r2(samplingWall / o.steps),
        s_per_step_median: r2(sortedSteps[Math.floor(sortedSteps.length / 2)]!),
        steps_s: perStep.map(r2),
        steps_cpu_s: perStepCpu.map(r2),
        unet: { calls: unet.calls, wall_s: r2(unet.wall), cpu_s: r2(unet.cpu) },
        outside_unet: {
          wall_s: r2(outsideWall),
          cpu_s: r2(outsideCpu),
          text_encoding: { calls: te.calls, wall_s: r2(te.wall), cpu_s: r2(te.cpu) },
          vae_decode: { calls: vae.calls, wall_s: r2(vae.wall), cpu_s: r2(vae.cpu) },
          png_encode: { wall_s: r2(pngWall), cpu_s: r2(pngCpu), bytes: png.length },
          sampler_cfg_rng_and_other: { wall_s: r2(outsideWall - te.wall - vae.wall - pngWall), cpu_s: r2(outsideCpu - te.cpu - vae.cpu - pngCpu) },
        },
        peak_rss_gb_after_load: r2(rssAfterLoad / 2 ** 30),
        peak_rss_gb: r2(peakRssBytes() / 2 ** 30),
        image_finite: finite,
      },
      null,
      2,
    ),
  );
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '512' },
      steps: { type: 'string', default: '20' },
      threads: { type: 'string' },
      keep: { type: 'string' },
      role: { type: 'string' },
      dir: { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    console.log('npx tsx bench/generate.ts [--size 256|512] [--steps 20] [--threads N] [--keep DIR]');
    return;
  }
  const size = Number(values.size);
  const steps = Number(values.steps);
  if (size !== 256 && size !== 512) throw new Error(`--size must be 256 or 512, got ${values.size}`);
  if (!Number.isInteger(steps) || steps < 1) throw new Error(`--steps must be a whole number >= 1, got ${values.steps}`);
  if (values.role === 'generate') return generateModel(values.dir!);
  if (values.role === 'measure') return measure(values.dir!, { size, steps, ...(values.threads ? { threads: Number(values.threads) } : {}) });

  const dir = values.keep ?? mkdtempSync(join(tmpdir(), 'redline-bench-generate-'));
  mkdirSync(dir, { recursive: true });
  const self = fileURLToPath(import.meta.url);
  const passThrough = process.argv.slice(2).filter((a, i, all) => a !== '--keep' && all[i - 1] !== '--keep');
  const child = (role: string): void => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', self, '--role', role, '--dir', dir, ...passThrough], { stdio: 'inherit', env: productEnv() });
    if (r.status !== 0) throw new Error(`bench ${role} failed (${r.status})`);
  };
  try {
    if (!existsSync(join(dir, 'vae', WEIGHT_FILES.vae))) {
      const t = performance.now();
      child('generate');
      console.error(`generated random fp16 SD 1.5 weights (text encoder, UNet, VAE) in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    }
    copyTokenizer(dir);
    child('measure');
  } finally {
    if (!values.keep) rmSync(dir, { recursive: true, force: true });
  }
}

await main();
