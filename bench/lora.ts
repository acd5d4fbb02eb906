// Reading and fusing a rank-32 kohya LoRA on full-size SD 1.5 shapes.
// Random weights are generated here (no download): the base weights the adapter targets
// are written to an fp16 safetensors file (as real checkpoints store them) and opened
// lazily, as Redline opens a checkpoint; the LoRA covers every module kohya's default
// network targets (UNet transformer linears and 1x1 projections, CLIP attention and MLP).
//   npx tsx bench/lora.ts [--rank 32] [--adapters 1] [--reference]
//   npx tsx bench/lora.ts --runtime [--size 256] [--steps 2]: the runtime-strength path on
//   a full random fp16 SD 1.5 UNet (adapter load, strength change, same-shape swap, per-step
//   overhead of 1 and 3 adapters against the base step, batch 2).
// Times are wall clock and CPU (user+system, all threads): on a shared machine the CPU time
// is the steadier figure. --reference also times the plain-JS fuse.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildModuleIndex, fuseAdapters, fuseAdaptersFast, loadAdapter, runtimeModules } from '../src/adapters/index.ts';
import { AdaptedSession, planComponent, planFeeds, RuntimeAdapterFeeds, runtimeModuleHook, slotModules } from '../src/adapters/graph-lora.ts';
import { writeOnnx } from '../src/graph/onnx.ts';
import { SD15_CONFIGS, textEncoderKeyMap, unetKeyMap, MappedWeightSource, TensorMapSource } from '../src/models/checkpoint/index.ts';
import { buildUnet } from '../src/models/unet.ts';
import { Session } from '../src/runtime/session.ts';
import { SafetensorsFile, writeSafetensors } from '../src/tensor/safetensors.ts';
import { Tensor } from '../src/tensor/tensor.ts';
import { f32ToF16Bits } from '../src/tensor/half.ts';

const { values } = parseArgs({
  options: {
    rank: { type: 'string', default: '32' },
    adapters: { type: 'string', default: '1' },
    reference: { type: 'boolean' },
    runtime: { type: 'boolean' },
    size: { type: 'string', default: '256' },
    steps: { type: 'string', default: '2' },
  },
});
const RANK = Number(values.rank);
const N_ADAPTERS = Number(values.adapters);

let state = 0x9e3779b9;
function rand(): number {
  state ^= state << 13;
  state ^= state >>> 17;
  state ^= state << 5;
  return (state >>> 0) / 4294967296 - 0.5;
}
// A table of fp16 patterns keeps generation of ~0.5 G values fast.
const HALF_TABLE = Uint16Array.from({ length: 65536 }, () => f32ToF16Bits(rand() * 0.05));
function randomF16(shape: number[]): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Uint16Array(n);
  for (let i = 0; i < n; i++) d[i] = HALF_TABLE[(Math.imul(i, 2654435761) ^ (i >>> 7)) & 0xffff]!;
  return new Tensor('f16', shape, d);
}

const isTarget = (name: string): boolean =>
  /attentions\.\d+\.(proj_in|proj_out|transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2)))\.weight$/.test(name) ||
  /encoder\.layers\.\d+\.(self_attn\.(q|k|v|out)_proj|mlp\.fc[12])\.weight$/.test(name);

const dir = mkdtempSync(join(tmpdir(), 'redline-bench-lora-'));
const mb = (b: number) => `${(b / 2 ** 20).toFixed(0)} MB`;
const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
type Timing = { wall: number; cpu: number };
const fmt = (t: Timing) => `${t.wall.toFixed(2)} s wall, ${t.cpu.toFixed(2)} s CPU`;
async function time<T>(f: () => T | Promise<T>): Promise<[T, Timing]> {
  const w = performance.now();
  const c = cpu();
  const r = await f();
  return [r, { wall: (performance.now() - w) / 1000, cpu: cpu() - c }];
}
if (values.runtime) {
  await runtimeBench();
  rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}

try {
  const t0 = performance.now();
  const targets = {
    unet: unetKeyMap(SD15_CONFIGS.unet).filter((e) => isTarget(e.diffusers)),
    text_encoder: textEncoderKeyMap(SD15_CONFIGS.text_encoder).filter((e) => isTarget(e.diffusers)),
  };
  const files: Record<'unet' | 'text_encoder', string> = { unet: join(dir, 'unet.safetensors'), text_encoder: join(dir, 'te.safetensors') };
  let params = 0;
  for (const c of ['unet', 'text_encoder'] as const) {
    const m = new Map(targets[c].map((e) => [e.diffusers, randomF16(e.shape)]));
    for (const t of m.values()) params += t.numel;
    writeSafetensors(files[c], m);
  }
  const adapters: string[] = [];
  for (let a = 0; a < N_ADAPTERS; a++) {
    const lora = new Map<string, Tensor>();
    for (const [c, prefix] of [['unet', 'lora_unet_'], ['text_encoder', 'lora_te_']] as const) {
      for (const e of targets[c]) {
        const base = prefix + e.diffusers.replace(/\.weight$/, '').replace(/\./g, '_');
        const conv = e.shape.length === 4;
        lora.set(`${base}.lora_down.weight`, randomF16(conv ? [RANK, e.shape[1]!, 1, 1] : [RANK, e.shape[1]!]));
        lora.set(`${base}.lora_up.weight`, randomF16(conv ? [e.shape[0]!, RANK, 1, 1] : [e.shape[0]!, RANK]));
        lora.set(`${base}.alpha`, new Tensor('f16', [], Uint16Array.of(f32ToF16Bits(RANK / 2))));
      }
    }
    const p = join(dir, `lora${a}.safetensors`);
    writeSafetensors(p, lora, { ss_network_dim: String(RANK), ss_network_alpha: String(RANK / 2) });
    adapters.push(p);
  }
  console.log(`setup: ${targets.unet.length} UNet + ${targets.text_encoder.length} TE target weights (${(params / 1e6).toFixed(0)} M params, fp16 on disk), ` +
    `LoRA rank ${RANK}: ${mb(statSync(adapters[0]!).size)} each; generated in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const opened = { unet: SafetensorsFile.open(files.unet), text_encoder: SafetensorsFile.open(files.text_encoder) };
  const source = (c: 'unet' | 'text_encoder') =>
    new MappedWeightSource(c, new Map(opened[c].keys().map((k) => [k, { file: opened[c], key: k, shape: opened[c].info(k).shape }])));
  const model = { components: { unet: source('unet'), text_encoder: source('text_encoder') }, configs: { unet: SD15_CONFIGS.unet, text_encoder: SD15_CONFIGS.text_encoder } };

  const [index, tIndex] = await time(() => buildModuleIndex(model));
  const [loaded, tLoad] = await time(() => adapters.map((p) => loadAdapter(p, index)));
  const [rt, tRuntime] = await time(() => runtimeModules(loaded[0]!));
  const all = loaded.map((adapter) => ({ adapter, te: 0.8, unet: 0.8 }));
  await fuseAdaptersFast(model.components, [{ adapter: loaded[0]!, te: 0, unet: 0 }]); // session creation outside the timing
  const [fused, tFuse] = await time(() => fuseAdaptersFast(model.components, all));
  const [, tRefuse] = await time(() => fuseAdaptersFast(model.components, [{ adapter: loaded[0]!, te: 0.4, unet: 0.4 }]));

  console.log(`module index (names of the model):      ${fmt(tIndex)}`);
  console.log(`read + match + check ${N_ADAPTERS} adapter(s):      ${fmt(tLoad)} (${loaded[0]!.modules.length} modules each)`);
  console.log(`runtime description (f32 factors):       ${fmt(tRuntime)} (${rt.filter((m) => m.form === 'matmul').length} matmul modules)`);
  console.log(`fuse ${N_ADAPTERS} adapter(s) into fp16 weights (ORT):   ${fmt(tFuse)} (${fused.unet.size + fused.text_encoder.size} weights)`);
  console.log(`re-fuse 1 adapter at another strength:   ${fmt(tRefuse)}`);
  if (values.reference) {
    const [, tRef] = await time(() => fuseAdapters(model.components, all));
    console.log(`same fuse, plain-JS reference path:      ${fmt(tRef)}`);
  }
  console.log(`peak RSS: ${mb(process.resourceUsage().maxRSS * 1024)}`);
  opened.unet.close();
  opened.text_encoder.close();
} finally {
  rmSync(dir, { recursive: true, force: true });
}

/** Random full-size UNet (fp16 on disk, opened lazily as a checkpoint is), rank-RANK kohya
 * LoRAs on the kohya-default UNet modules, and the runtime path timed at each stage. One
 * UNet session lives at a time (each holds ~3.5 GB of prepacked f32 weights). */
async function runtimeBench(): Promise<void> {
  const size = Number(values.size);
  const steps = Number(values.steps);
  const rdir = mkdtempSync(join(tmpdir(), 'redline-bench-lora-rt-'));
  try {
    const t = performance.now();
    const cfg = SD15_CONFIGS.unet;
    const full = new Map<string, Tensor>();
    for (const e of unetKeyMap(cfg)) {
      const n = e.shape.reduce((a, b) => a * b, 1);
      const isNormWeight = /norm/.test(e.diffusers) && e.shape.length === 1 && e.diffusers.endsWith('.weight');
      const scale = e.shape.length > 1 ? 1 / Math.sqrt(n / e.shape[0]!) : 0.02;
      const d = new Uint16Array(n);
      if (isNormWeight) d.fill(f32ToF16Bits(1));
      else {
        const table = Uint16Array.from({ length: 4096 }, () => f32ToF16Bits(2 * rand() * scale));
        for (let i = 0; i < n; i++) d[i] = table[(Math.imul(i, 2654435761) ^ (i >>> 9)) & 4095]!;
      }
      full.set(e.diffusers, new Tensor('f16', e.shape, d));
    }
    const unetFile = join(rdir, 'unet.safetensors');
    writeSafetensors(unetFile, full);
    full.clear();
    const loraFiles: string[] = [];
    const targets = unetKeyMap(cfg).filter((e) => isTarget(e.diffusers));
    for (let a = 0; a < 4; a++) {
      const lora = new Map<string, Tensor>();
      for (const e of targets) {
        const base = 'lora_unet_' + e.diffusers.replace(/\.weight$/, '').replace(/\./g, '_');
        const conv = e.shape.length === 4;
        lora.set(`${base}.lora_down.weight`, randomF16(conv ? [RANK, e.shape[1]!, 1, 1] : [RANK, e.shape[1]!]));
        lora.set(`${base}.lora_up.weight`, randomF16(conv ? [e.shape[0]!, RANK, 1, 1] : [e.shape[0]!, RANK]));
        lora.set(`${base}.alpha`, new Tensor('f16', [], Uint16Array.of(f32ToF16Bits(RANK / 2))));
      }
      const p = join(rdir, `lora${a}.safetensors`);
      writeSafetensors(p, lora, { ss_network_dim: String(RANK), ss_network_alpha: String(RANK / 2) });
      loraFiles.push(p);
    }
    console.log(`setup: random fp16 SD 1.5 UNet + 4 rank-${RANK} UNet LoRAs (${targets.length} modules, ${mb(statSync(loraFiles[0]!).size)} each) in ${((performance.now() - t) / 1000).toFixed(1)} s`);

    const file = SafetensorsFile.open(unetFile);
    const unet = new MappedWeightSource('unet', new Map(file.keys().map((k) => [k, { file, key: k, shape: file.info(k).shape }])));
    const index = buildModuleIndex({ components: { unet, text_encoder: new TensorMapSource(new Map()) }, configs: { unet: cfg, text_encoder: SD15_CONFIGS.text_encoder } });
    const lat = size / 8;
    const r = (n: number, s: number) => Float32Array.from({ length: n }, () => rand() * s);
    const feeds = {
      sample: new Tensor('f32', [2, 4, lat, lat], r(2 * 4 * lat * lat, 2)),
      timestep: new Tensor('f32', [2], Float32Array.of(500, 500)),
      encoder_hidden_states: new Tensor('f32', [2, 77, cfg.cross_attention_dim], r(2 * 77 * cfg.cross_attention_dim, 1)),
    };
    const open = async (graph: ReturnType<typeof buildUnet>, name: string): Promise<[Session, Timing]> =>
      time(async () => Session.create(writeOnnx(graph, join(rdir, name)).modelPath));
    const stepTimes = async (s: { run: Session['run'] }): Promise<Timing> => {
      await s.run(feeds, ['out_sample']); // warm-up: first-run allocations
      let total: Timing = { wall: 0, cpu: 0 };
      for (let i = 0; i < steps; i++) {
        const [, st] = await time(() => s.run(feeds, ['out_sample']));
        total = { wall: total.wall + st.wall / steps, cpu: total.cpu + st.cpu / steps };
      }
      return total;
    };
    const line = (what: string, tm: Timing, extra = '') => console.log(`${what.padEnd(44)} ${fmt(tm)}${extra}`);
    console.log(`UNet ${size}x${size}, batch 2 (CFG pair), mean of ${steps} steps after a warm-up; ${cpusLine()}`);

    const [base, tBase] = await open(buildUnet(cfg, unet), 'base');
    line('base UNet session (export + create)', tBase);
    const baseStep = await stepTimes(base);
    line('base step', baseStep);
    await base.release();

    const [[first, firstFeeds], tLoad] = await time(() => {
      const a = loadAdapter(loraFiles[0]!, index);
      return [a, new RuntimeAdapterFeeds(a)] as const;
    });
    line(`load rank-${RANK} adapter (read, match, runtime feeds)`, tLoad, ` (${first.modules.length} modules)`);
    const plan1 = planComponent('unet', [{ feeds: firstFeeds, strength: 0.8 }]);
    const hook1 = runtimeModuleHook('unet', slotModules(plan1));
    const [one, tBuild1] = await open(buildUnet(cfg, unet, { moduleHook: hook1 }), 'one');
    line('1-adapter UNet session, first use only', tBuild1);
    const step1 = await stepTimes(new AdaptedSession(one, planFeeds(plan1)));
    line('step with 1 adapter', step1, ` (${pct(step1, baseStep)} vs base)`);
    const [s2, tStrength] = await time(() => new AdaptedSession(one, planFeeds(planComponent('unet', [{ feeds: firstFeeds, strength: 0.35 }]))));
    line('change its strength (0.8 -> 0.35)', tStrength, ', no session build');
    await s2.run(feeds, ['out_sample']);
    const [s3, tSwap] = await time(() => {
      const second = new RuntimeAdapterFeeds(loadAdapter(loraFiles[1]!, index));
      const plan = planComponent('unet', [{ feeds: second, strength: 0.8 }]);
      if (plan.key !== plan1.key) throw new Error('the second adapter should have the same signature');
      return new AdaptedSession(one, planFeeds(plan));
    });
    line('swap to a second same-shape adapter (incl. load)', tSwap, ', no session build');
    await s3.run(feeds, ['out_sample']);
    await one.release();

    const three = [0, 2, 3].map((i) => ({ feeds: i === 0 ? firstFeeds : new RuntimeAdapterFeeds(loadAdapter(loraFiles[i]!, index)), strength: 0.5 }));
    const plan3 = planComponent('unet', three);
    const [s3x, tBuild3] = await open(buildUnet(cfg, unet, { moduleHook: runtimeModuleHook('unet', slotModules(plan3)) }), 'three');
    line('3-adapter UNet session, first use only', tBuild3);
    const step3 = await stepTimes(new AdaptedSession(s3x, planFeeds(plan3)));
    line('step with 3 adapters', step3, ` (${pct(step3, baseStep)} vs base)`);
    await s3x.release();
    file.close();
    console.log(`peak RSS: ${mb(process.resourceUsage().maxRSS * 1024)}`);
  } finally {
    rmSync(rdir, { recursive: true, force: true });
  }
}

function pct(a: Timing, b: Timing): string {
  return `${(((a.wall - b.wall) / b.wall) * 100).toFixed(1)}% wall, ${(((a.cpu - b.cpu) / b.cpu) * 100).toFixed(1)}% CPU`;
}

function cpusLine(): string {
  return `load average ${loadavg().map((l) => l.toFixed(1)).join(' ')} on ${availableParallelism()} cores`;
}
