// SD 1.5 VAE decoder on the CPU provider: one latent [1, 4, 64, 64] -> a 512x512 image,
// through the code the pipeline runs (buildVaeDecoder -> compileGraph). Reports session
// creation, each decode as wall and CPU seconds (CPU = user + system of all threads: the
// machine is shared, so wall time measures the neighbours too), minor page faults, and
// peak RSS. Weights are random fp16 at SD 1.5's VAE config, written by this benchmark.
//
//   npx tsx bench/vae-decode.ts [--runs 2] [--size 512] [--threads N] [--cache] [--hugepages]
//                               [--tiled] [--profile PREFIX] [--keep DIR]
//
// --tiled: decodeTiled (diffusers' tiled_decode: 64-latent tiles, 25% overlap); sizes up to
// 512 are one tile, so compare at --size 768 or more.
// --hugepages: the measuring process runs with GLIBC_TUNABLES=glibc.malloc.hugetlb=1, so
// malloc asks for transparent huge pages (THP in 'madvise' mode here): one fault per 2 MiB
// instead of per 4 KiB when ORT's arena first touches its memory.
// --cache: through the compile cache as the pipeline loads it; one process fills the cache
// (a miss), a fresh one measures the hit (the session maps the ORT-optimised model).
// --profile writes ORT's per-node profile and prints the time per operator type.
// The weights are generated in one child process and measured in a fresh one, so the peak
// RSS is the measuring process's own.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { SD15_CONFIGS } from '../src/models/checkpoint/configs.ts';
import { vaeKeyMap } from '../src/models/checkpoint/sd15-keymap.ts';
import { MappedWeightSource, type StoredTensor } from '../src/models/checkpoint/weight-source.ts';
import { buildVaeDecoder, decodeTiled } from '../src/models/vae.ts';
import { compileGraph } from '../src/runtime/compile.ts';
import { SafetensorsFile, writeSafetensors } from '../src/tensor/safetensors.ts';
import { Tensor } from '../src/tensor/tensor.ts';
import { randomF16Weights, xorshift } from './_random-weights.ts';

const WEIGHTS = 'vae.fp16.safetensors';

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

/** Latents as the sampler leaves them, already divided by the scaling factor (std ~ 1/0.18). */
function latents(n: number, seed: number): Float32Array {
  const rand = xorshift(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = ((rand() / 2 ** 32) * 2 - 1) * 5;
  return out;
}

const r2 = (x: number): number => +x.toFixed(2);

/** ORT names its profile `<prefix>_<date>.json`. */
function newestProfile(prefix: string): string | undefined {
  const dir = dirname(prefix) || '.';
  const files = readdirSync(dir)
    .filter((f) => f.startsWith(`${basename(prefix)}_`) && f.endsWith('.json'))
    .map((f) => join(dir, f));
  return files.sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
}

/** ORT profile (last run only) -> milliseconds per operator type, largest first. */
function profileByOp(path: string): Record<string, { ms: number; nodes: number }> {
  const events = JSON.parse(readFileSync(path, 'utf8')) as { cat: string; name: string; ts: number; dur: number; args?: { op_name?: string } }[];
  const byOp = new Map<string, { ms: number; nodes: Set<string> }>();
  const lastRun = events.filter((e) => e.name === 'model_run').at(-1)?.ts ?? 0;
  for (const e of events) {
    if (e.ts < lastRun || e.cat !== 'Node' || !e.name.endsWith('_kernel_time') || !e.args?.op_name) continue;
    const s = byOp.get(e.args.op_name) ?? { ms: 0, nodes: new Set() };
    s.ms += e.dur / 1000;
    s.nodes.add(e.name);
    byOp.set(e.args.op_name, s);
  }
  return Object.fromEntries(
    [...byOp.entries()].sort((a, b) => b[1].ms - a[1].ms).map(([k, v]) => [k, { ms: Math.round(v.ms), nodes: v.nodes.size }]),
  );
}

async function measure(dir: string, o: { runs: number; size: number; threads?: number; profile?: string; cache?: string; tiled?: boolean }): Promise<void> {
  const cfg = SD15_CONFIGS.vae;
  const loadAvg = loadavg().map(r2);
  const file = SafetensorsFile.open(join(dir, WEIGHTS));
  const entries = new Map<string, StoredTensor>();
  for (const key of file.keys()) entries.set(key, { file, key, shape: file.info(key).shape });
  const weights = new MappedWeightSource('benchmark VAE', entries);
  const w0 = performance.now();
  const c0 = cpu();
  const session = await compileGraph(buildVaeDecoder(cfg, weights), {
    ...(o.threads ? { threads: o.threads } : {}),
    ...(o.profile ? { profilePrefix: o.profile } : {}),
    ...(o.cache ? { cacheDir: o.cache } : {}),
  });
  const loadWall = (performance.now() - w0) / 1000;
  const loadCpu = cpu() - c0;
  const rssAfterLoad = peakRssBytes();
  const lat = o.size / 8;
  const latent = new Tensor('f32', [1, cfg.latent_channels, lat, lat], latents(cfg.latent_channels * lat * lat, 7));
  const wall: number[] = [];
  const cpuS: number[] = [];
  const faults: number[] = [];
  if (o.runs === 0) return session.release(); // --cache: this process only fills the cache
  let image: Tensor | undefined;
  for (let i = 0; i < o.runs; i++) {
    const w = performance.now();
    const c = cpu();
    const f = minorFaults();
    image = o.tiled ? await decodeTiled(session, latent, cfg) : (await session.run({ latent }, ['image'])).image!;
    wall.push((performance.now() - w) / 1000);
    cpuS.push(cpu() - c);
    faults.push(minorFaults() - f);
  }
  const data = image!.toFloat32();
  let sum = 0;
  for (const v of data) sum += v;
  await session.release(); // writes the profile, if any
  const profileFile = o.profile ? newestProfile(o.profile) : undefined;
  console.log(
    JSON.stringify(
      {
        model: 'SD 1.5 VAE decoder (random fp16 weights)',
        size: `${o.size}x${o.size}`,
        threads: o.threads ?? 'all cores',
        tiled: !!o.tiled,
        malloc_hugepages: process.env.GLIBC_TUNABLES?.includes('glibc.malloc.hugetlb=1') ?? false,
        session: o.cache ? 'compile cache hit (ORT-optimised model mapped)' : 'built and optimised by ORT at load',
        load_avg_at_start_1_5_15m: loadAvg,
        session_create_s: r2(loadWall),
        session_create_cpu_s: r2(loadCpu),
        decode_wall_s: wall.map(r2),
        decode_cpu_s: cpuS.map(r2),
        decode_minor_faults: faults,
        peak_rss_gb_after_load: r2(rssAfterLoad / 2 ** 30),
        peak_rss_gb: r2(peakRssBytes() / 2 ** 30),
        output_mean: +(sum / data.length).toFixed(6),
        output_finite: data.every((v) => Number.isFinite(v)),
        ...(profileFile ? { profile: profileFile, profile_ms_by_op: profileByOp(profileFile) } : {}),
      },
      null,
      2,
    ),
  );
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '2' },
      size: { type: 'string', default: '512' },
      threads: { type: 'string' },
      profile: { type: 'string' },
      cache: { type: 'boolean' },
      hugepages: { type: 'boolean' },
      tiled: { type: 'boolean' },
      keep: { type: 'string' },
      role: { type: 'string' },
      dir: { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    console.log('npx tsx bench/vae-decode.ts [--runs 2] [--size 512] [--threads N] [--cache] [--hugepages] [--tiled] [--profile PREFIX] [--keep DIR]');
    return;
  }
  const size = Number(values.size);
  const runs = Number(values.runs);
  if (!Number.isInteger(size) || size < 64 || size % 8 !== 0) throw new Error(`--size must be a multiple of 8 >= 64, got ${values.size}`);
  if (!Number.isInteger(runs) || runs < (values.role ? 0 : 1)) throw new Error(`--runs must be a whole number >= 1, got ${values.runs}`);
  if (values.role === 'generate') {
    writeSafetensors(join(values.dir!, WEIGHTS), randomF16Weights(vaeKeyMap(SD15_CONFIGS.vae), 1236));
    return;
  }
  if (values.role === 'measure') {
    return measure(values.dir!, {
      runs,
      size,
      ...(values.threads ? { threads: Number(values.threads) } : {}),
      ...(values.profile ? { profile: values.profile } : {}),
      ...(values.cache ? { cache: join(values.dir!, 'compile-cache') } : {}),
      ...(values.tiled ? { tiled: true } : {}),
    });
  }
  const dir = values.keep ?? mkdtempSync(join(tmpdir(), 'redline-bench-vae-'));
  mkdirSync(dir, { recursive: true });
  const self = fileURLToPath(import.meta.url);
  const passThrough = process.argv.slice(2).filter((a, i, all) => a !== '--keep' && all[i - 1] !== '--keep');
  const child = (role: string, extra: string[] = []): void => {
    const env = values.hugepages && role === 'measure' ? { ...process.env, GLIBC_TUNABLES: 'glibc.malloc.hugetlb=1' } : process.env;
    const r = spawnSync(process.execPath, ['--import', 'tsx', self, '--role', role, '--dir', dir, ...passThrough, ...extra], { stdio: 'inherit', env });
    if (r.status !== 0) throw new Error(`bench ${role} failed (${r.status})`);
  };
  try {
    if (!existsSync(join(dir, WEIGHTS))) child('generate');
    writeFileSync(join(dir, 'config.json'), JSON.stringify(SD15_CONFIGS.vae, null, 2));
    if (values.cache) {
      rmSync(join(dir, 'compile-cache'), { recursive: true, force: true });
      child('measure', ['--runs', '0']);
    }
    child('measure');
  } finally {
    if (!values.keep) rmSync(dir, { recursive: true, force: true });
  }
}

await main();
