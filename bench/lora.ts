// Reading and fusing a rank-32 kohya LoRA on full-size SD 1.5 shapes.
// Random weights are generated here (no download): the base weights the adapter targets
// are written to an fp16 safetensors file (as real checkpoints store them) and opened
// lazily, as Redline opens a checkpoint; the LoRA covers every module kohya's default
// network targets (UNet transformer linears and 1x1 projections, CLIP attention and MLP).
//   npx tsx bench/lora.ts [--rank 32] [--adapters 1] [--reference]
// Times are wall clock and CPU (user+system, all threads): on a shared machine the CPU time
// is the steadier figure. --reference also times the plain-JS fuse.
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildModuleIndex, fuseAdapters, fuseAdaptersFast, loadAdapter, runtimeModules } from '../src/adapters/index.ts';
import { SD15_CONFIGS, textEncoderKeyMap, unetKeyMap, MappedWeightSource } from '../src/models/checkpoint/index.ts';
import { SafetensorsFile, writeSafetensors } from '../src/tensor/safetensors.ts';
import { Tensor } from '../src/tensor/tensor.ts';
import { f32ToF16Bits } from '../src/tensor/half.ts';

const { values } = parseArgs({ options: { rank: { type: 'string', default: '32' }, adapters: { type: 'string', default: '1' }, reference: { type: 'boolean' } } });
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
