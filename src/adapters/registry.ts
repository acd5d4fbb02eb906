// The adapter registry: what is in a LoRA folder, with the metadata kohya's trainer writes
// (ss_* keys), the hashes A1111 puts in infotext, and Redline's own sidecar NAME.json
// (intended category, calibration of intensity levels to strength). Reads headers only,
// plus one streamed pass per file for hashes (cached).
import { existsSync, lstatSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, extname, join, relative } from 'node:path';
import { RedlineError } from '../errors.ts';
import { loraFamily, type ModelFamily, sniffFileKind } from '../models/checkpoint/detect.ts';
import { fileHashes, loraShortHash } from '../models/checkpoint/hash.ts';
import { SafetensorsFile } from '../tensor/safetensors.ts';
import { cleanNumber, cleanText } from './text.ts';

export interface AdapterSidecar {
  /** What the adapter is for, e.g. "vfx-gore", "moulage" (lower-case words, dashes). */
  category?: string;
  /** Intensity level -> strength, e.g. {"1": 0.3, "2": 0.55, "3": 0.8}. */
  intensity?: Record<string, number>;
  notes?: string;
}

export interface AdapterListing {
  /** Path relative to the listed folder. */
  file: string;
  name: string;
  size: number;
  kind: 'lora' | 'locon' | 'loha' | 'lokr' | 'unknown';
  family: ModelFamily;
  keyCount: number;
  hashes: { a1111: string; addnet: string | null; sha256: string; legacy: string } | null;
  meta: {
    title?: string;
    baseModel?: string;
    trainedOn?: string;
    rank?: number;
    alpha?: number;
    networkModule?: string;
    resolution?: string;
    topTags: Array<{ tag: string; count: number }>;
  };
  sidecar: AdapterSidecar | null;
  /** Problems found (bad metadata, bad sidecar, refused file); never fatal for the listing. */
  warnings: string[];
}

export const LIMITS = { text: 120, tag: 60, tags: 10, notes: 500, tagJsonBytes: 2_000_000, sidecarBytes: 64 * 1024, levels: 20, walkDepth: 6 } as const;

/** Validates a sidecar object; returns problems instead of throwing. */
export function parseSidecar(raw: unknown): { sidecar: AdapterSidecar | null; problems: string[] } {
  const problems: string[] = [];
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return { sidecar: null, problems: ['sidecar is not a JSON object'] };
  const o = raw as Record<string, unknown>;
  const out: AdapterSidecar = {};
  for (const k of Object.keys(o)) if (!['category', 'intensity', 'notes'].includes(k)) problems.push(`sidecar field "${cleanText(k, 40)}" is not known and was ignored`);
  if (o.category !== undefined) {
    if (typeof o.category === 'string' && /^[a-z0-9][a-z0-9-]{0,39}$/.test(o.category)) out.category = o.category;
    else problems.push('sidecar category must be 1-40 lower-case letters, digits or dashes');
  }
  if (o.intensity !== undefined) {
    if (!o.intensity || typeof o.intensity !== 'object' || Array.isArray(o.intensity)) {
      problems.push('sidecar intensity must map level names to strengths');
    } else {
      const levels: Record<string, number> = {};
      const entries = Object.entries(o.intensity as Record<string, unknown>);
      if (entries.length > LIMITS.levels) problems.push(`sidecar intensity has ${entries.length} levels (limit ${LIMITS.levels})`);
      for (const [level, v] of entries.slice(0, LIMITS.levels)) {
        const name = cleanText(level, 20);
        if (!/^[A-Za-z0-9_-]{1,20}$/.test(level)) problems.push(`sidecar intensity level "${name}" must be 1-20 letters, digits, _ or -`);
        else if (typeof v !== 'number' || !Number.isFinite(v) || v < -4 || v > 4) problems.push(`sidecar intensity level "${name}" needs a strength between -4 and 4`);
        else levels[level] = v;
      }
      out.intensity = levels;
    }
  }
  if (o.notes !== undefined) {
    if (typeof o.notes === 'string') out.notes = cleanText(o.notes, LIMITS.notes);
    else problems.push('sidecar notes must be text');
  }
  return { sidecar: out, problems };
}

/** The sidecar NAME.json beside an adapter file (size-limited, validated), or null. */
export function readSidecar(path: string): { sidecar: AdapterSidecar | null; problems: string[] } {
  const side = path.replace(/\.safetensors$/i, '.json');
  if (!existsSync(side)) return { sidecar: null, problems: [] };
  const size = statSync(side).size;
  if (size > LIMITS.sidecarBytes) return { sidecar: null, problems: [`sidecar ${basename(side)} is ${size} bytes (limit ${LIMITS.sidecarBytes}); ignored`] };
  try {
    return parseSidecar(JSON.parse(readFileSync(side, 'utf8')));
  } catch {
    return { sidecar: null, problems: [`sidecar ${basename(side)} is not valid JSON; ignored`] };
  }
}

function topTags(raw: string | undefined, warnings: string[]): Array<{ tag: string; count: number }> {
  if (!raw) return [];
  if (raw.length > LIMITS.tagJsonBytes) {
    warnings.push(`ss_tag_frequency is ${raw.length} characters (limit ${LIMITS.tagJsonBytes}); not read`);
    return [];
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    warnings.push('ss_tag_frequency is not valid JSON');
    return [];
  }
  const totals = new Map<string, number>();
  // {dataset dir: {tag: count}}
  if (parsed && typeof parsed === 'object') {
    for (const tags of Object.values(parsed as Record<string, unknown>)) {
      if (!tags || typeof tags !== 'object') continue;
      for (const [tag, count] of Object.entries(tags as Record<string, unknown>)) {
        const c = typeof count === 'number' && Number.isFinite(count) && count > 0 ? count : 0;
        const t = cleanText(tag, LIMITS.tag);
        if (t && c) totals.set(t, (totals.get(t) ?? 0) + c);
      }
    }
  }
  return [...totals].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, LIMITS.tags).map(([tag, count]) => ({ tag, count }));
}

function metadataFamily(meta: Record<string, string>): ModelFamily | null {
  const v = meta.ss_base_model_version ?? '';
  const arch = meta['modelspec.architecture'] ?? '';
  if (v.startsWith('sdxl') || arch.startsWith('stable-diffusion-xl')) return 'sdxl';
  if (meta.ss_v2 === 'True' || v.startsWith('sd_v2') || arch.startsWith('stable-diffusion-v2')) return 'sd2';
  if (v.startsWith('sd_v1') || arch.startsWith('stable-diffusion-v1')) return 'sd1';
  if (arch.startsWith('flux')) return 'flux';
  return null;
}

function kindFromHeader(file: SafetensorsFile): AdapterListing['kind'] {
  const keys = file.keys();
  if (keys.some((k) => k.includes('.hada_w1_a'))) return 'loha';
  if (keys.some((k) => /\.lokr_w[12]/.test(k))) return 'lokr';
  const downs = keys.filter((k) => /\.(lora_down|lora_A)(\.default)?\.weight$/.test(k));
  if (!downs.length) return 'unknown';
  return downs.some((k) => {
    const s = file.info(k).shape;
    return s.length === 4 && (s[2] !== 1 || s[3] !== 1);
  })
    ? 'locon'
    : 'lora';
}

export interface ListOptions {
  /** Compute hashes (one read of every file; cached). Default true. */
  hashes?: boolean;
  cacheFile?: string | null;
}

/** One adapter file's listing; problems go to `warnings`. */
export async function describeAdapterFile(path: string, root: string, opts: ListOptions = {}): Promise<AdapterListing> {
  const st = statSync(path);
  const entry: AdapterListing = {
    file: relative(root, path) || basename(path),
    name: cleanText(basename(path).replace(/\.(safetensors|ckpt|pt|pth|bin)$/i, ''), LIMITS.text),
    size: st.size,
    kind: 'unknown',
    family: 'unknown',
    keyCount: 0,
    hashes: null,
    meta: { topTags: [] },
    sidecar: null,
    warnings: [],
  };
  if (sniffFileKind(path) !== 'safetensors') {
    entry.warnings.push('not a safetensors file (pickles are refused); convert it to .safetensors to use it');
    return entry;
  }
  let meta: Record<string, string>;
  try {
    const f = SafetensorsFile.open(path);
    try {
      meta = f.metadata;
      const keys = f.keys();
      entry.keyCount = keys.length;
      entry.kind = kindFromHeader(f);
      if (entry.kind === 'unknown') entry.warnings.push('no LoRA, LoCon, LoHa or LoKr tensors found: not an adapter');
      const byMeta = metadataFamily(meta);
      const byKeys = loraFamily(keys);
      entry.family = byKeys !== 'sd1' ? byKeys : (byMeta ?? 'sd1');
      if (byMeta && byMeta !== entry.family) entry.warnings.push(`metadata says ${byMeta} but the tensor names say ${entry.family}`);
    } finally {
      f.close();
    }
  } catch (err) {
    entry.warnings.push(err instanceof RedlineError ? err.message : `unreadable: ${(err as Error).message}`);
    return entry;
  }
  const m = entry.meta;
  const text = (k: string): string | undefined => cleanText(meta[k], LIMITS.text) || undefined;
  m.title = text('modelspec.title') ?? text('ss_output_name');
  m.baseModel = text('ss_base_model_version') ?? text('modelspec.architecture');
  m.trainedOn = text('ss_sd_model_name');
  m.networkModule = text('ss_network_module');
  m.resolution = text('ss_resolution');
  if (meta.ss_network_dim !== undefined) {
    const r = cleanNumber(meta.ss_network_dim, 1, 65536);
    if (r === null || !Number.isInteger(r)) entry.warnings.push('ss_network_dim is not a whole number between 1 and 65536');
    else m.rank = r;
  }
  if (meta.ss_network_alpha !== undefined) {
    const a = cleanNumber(meta.ss_network_alpha, 0, 65536);
    if (a === null) entry.warnings.push('ss_network_alpha is not a number between 0 and 65536');
    else m.alpha = a;
  }
  m.topTags = topTags(meta.ss_tag_frequency, entry.warnings);
  const side = readSidecar(path);
  entry.sidecar = side.sidecar;
  entry.warnings.push(...side.problems);
  if (opts.hashes !== false) {
    const h = await fileHashes(path, { cacheFile: opts.cacheFile });
    entry.hashes = { a1111: loraShortHash(h), addnet: h.addnet, sha256: h.sha256, legacy: h.legacy };
  }
  return entry;
}

/** Adapter files under `dir` (recursively, not following directory symlinks). */
export function findAdapterFiles(dir: string): string[] {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new RedlineError('dir_not_found', `${dir} is not a folder.`);
  const out: string[] = [];
  const walk = (d: string, depth: number): void => {
    for (const name of readdirSync(d).sort()) {
      if (name.startsWith('.')) continue;
      const p = join(d, name);
      const ls = lstatSync(p);
      if (ls.isDirectory()) {
        if (depth < LIMITS.walkDepth) walk(p, depth + 1);
      } else if (['.safetensors', '.ckpt', '.pt'].includes(extname(name).toLowerCase())) {
        out.push(p);
      }
    }
  };
  walk(dir, 0);
  return out;
}

export async function listAdapters(dir: string, opts: ListOptions = {}): Promise<AdapterListing[]> {
  const out: AdapterListing[] = [];
  for (const f of findAdapterFiles(dir)) out.push(await describeAdapterFile(f, dir, opts));
  return out;
}

/**
 * The strength an intensity level maps to in the adapter's sidecar calibration. A level the
 * sidecar does not calibrate is an error, not a guess: the safety layer clamps levels, and
 * an uncalibrated adapter must not silently run at some default strength.
 */
export function strengthForLevel(adapter: Pick<AdapterListing, 'name' | 'sidecar'>, level: string | number): number {
  const key = String(level);
  const table = adapter.sidecar?.intensity;
  const s = table?.[key];
  if (s === undefined) {
    const known = table ? Object.keys(table) : [];
    throw new RedlineError(
      'intensity_uncalibrated',
      `${adapter.name} has no calibrated strength for intensity level ${cleanText(key, 20)}${known.length ? ` (calibrated: ${known.join(', ')})` : ' (no sidecar calibration)'}.`,
      `Add "intensity": {"${cleanText(key, 20)}": STRENGTH} to ${adapter.name}.json beside the adapter.`,
    );
  }
  return s;
}
