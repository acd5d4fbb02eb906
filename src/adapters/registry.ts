// The adapter registry: what is in a LoRA folder, with the metadata kohya's trainer writes
// (ss_* keys), the hashes A1111 puts in infotext, and Redline's own sidecar NAME.json
// (intended category, calibration of intensity levels to strength). Reads headers only,
// plus one streamed pass per file for hashes (cached).
import { closeSync, existsSync, lstatSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { basename, extname, join, relative } from 'node:path';
import { RedlineError } from '../errors.ts';
import { loraFamily, type ModelFamily, sniffFileKind } from '../models/checkpoint/detect.ts';
import { fileHashes, loraShortHash } from '../models/checkpoint/hash.ts';
import { SafetensorsFile } from '../tensor/safetensors.ts';
import { cleanNumber, cleanText } from './text.ts';

export interface AdapterSidecar {
  /** What content the adapter makes: one of SIDECAR_CATEGORIES (the policy governs it). */
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
  /** Set when the adapter must not be used (its sidecar is unreadable or invalid, or the
   * category its metadata declares has no matching sidecar): the error generation raises. */
  refusal: AdapterRefusal | null;
  /** Problems found (bad metadata, bad sidecar, refused file); never fatal for the listing. */
  warnings: string[];
}

/** Why an adapter is refused, as the RedlineError that using it throws. */
export interface AdapterRefusal {
  code: string;
  message: string;
  hint: string;
}

/**
 * The safetensors metadata key in which an adapter declares its category (Redline's own
 * keys are `redline.*`, like `redline.merge`). A declared category must be matched by the
 * sidecar: a graded adapter copied without its NAME.json would otherwise run ungraded.
 */
export const CATEGORY_METADATA_KEY = 'redline.category';

const CATEGORY_PATTERN = /^[a-z0-9][a-z0-9-]{0,39}$/;

/**
 * The categories a sidecar, or an adapter's CATEGORY_METADATA_KEY, may declare. Each one is
 * governed by the policy (src/safety/categories.ts maps it to its policy category):
 * `graphic-injury` adapters run at the strength the policy gives the effective intensity
 * level. Any other category is refused, since the policy could not grade it and it would
 * run at the tag's weight. An adapter that makes no graded content declares no category.
 */
export const SIDECAR_CATEGORIES = ['graphic-injury'] as const;
export type SidecarCategory = (typeof SIDECAR_CATEGORIES)[number];

/**
 * The safety layer's hard-blocked categories (src/safety/categories.ts) as a sidecar spells
 * them; test/safety/adapter-categories.test.ts keeps the two lists equal. An adapter made for
 * one is refused outright, whatever the rest of its sidecar says.
 */
export const HARD_BLOCKED_SIDECAR_CATEGORIES = [
  'minors-sexual', 'minors-graded', 'sexual-violence', 'real-person-graded', 'real-person-sexual', 'extremist', 'self-harm-promotion',
] as const;

const categoryWords = (category: string): string[] =>
  category.toLowerCase().split(/[^a-z0-9]+/).filter(Boolean).map((w) => (w.length > 3 && w.endsWith('s') && !w.endsWith('ss') ? w.slice(0, -1) : w));

/**
 * The hard-blocked category a declared category names, or null. Words count in any order
 * and singular or plural, with other words around them ("sexual-minors",
 * "extremist-propaganda" and "minor-sexual-v2" are all hard-blocked).
 */
export function hardBlockedSidecarCategory(category: string): string | null {
  const words = new Set(categoryWords(category));
  return HARD_BLOCKED_SIDECAR_CATEGORIES.find((blocked) => categoryWords(blocked).every((w) => words.has(w))) ?? null;
}

/** Why a declared category cannot be used (hard-blocked, malformed or unknown), or null when it can. */
export function sidecarCategoryProblem(category: string): { kind: 'hard_blocked' | 'malformed' | 'unknown'; problem: string } | null {
  const shown = cleanText(category, 40);
  // Checked first, on any spelling: a hard-blocked adapter is refused as such, never as a typo.
  const blocked = hardBlockedSidecarCategory(category);
  if (blocked) return { kind: 'hard_blocked', problem: `category "${shown}" is the hard-blocked category ${blocked}, which no policy, role or request allows` };
  if (!CATEGORY_PATTERN.test(category)) return { kind: 'malformed', problem: 'category must be 1-40 lower-case letters, digits or dashes' };
  if (!(SIDECAR_CATEGORIES as readonly string[]).includes(category)) return { kind: 'unknown', problem: `category "${shown}" is not a category Redline knows (known: ${SIDECAR_CATEGORIES.join(', ')})` };
  return null;
}

export const LIMITS = { text: 120, tag: 60, tags: 10, notes: 500, tagJsonBytes: 2_000_000, sidecarBytes: 64 * 1024, levels: 20, walkDepth: 6 } as const;

/**
 * Validates a sidecar object without throwing. `problems` make the sidecar invalid (an
 * adapter with an invalid sidecar is refused, see readSidecar); `warnings` (unknown fields,
 * kept for sidecars written by newer versions) do not.
 */
export function parseSidecar(raw: unknown): { sidecar: AdapterSidecar | null; problems: string[]; warnings: string[] } {
  const problems: string[] = [];
  const warnings: string[] = [];
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return { sidecar: null, problems: ['sidecar is not a JSON object'], warnings };
  const o = raw as Record<string, unknown>;
  const out: AdapterSidecar = {};
  for (const k of Object.keys(o)) if (!['category', 'intensity', 'notes'].includes(k)) warnings.push(`sidecar field "${cleanText(k, 40)}" is not known and was ignored`);
  if (o.category !== undefined) {
    const bad = typeof o.category === 'string' ? sidecarCategoryProblem(o.category) : { problem: 'category must be 1-40 lower-case letters, digits or dashes' };
    if (bad) problems.push(`sidecar ${bad.problem}`);
    else out.category = o.category as string;
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
  return { sidecar: out, problems, warnings };
}

const ADAPTER_EXTENSION = /\.(safetensors|ckpt|pt|pth|bin)$/i;

/** The sidecar's path: NAME.json beside NAME.safetensors (or beside an extension-less NAME). */
export function sidecarPath(adapterPath: string): string {
  return ADAPTER_EXTENSION.test(adapterPath) ? adapterPath.replace(/\.[^.]+$/, '.json') : `${adapterPath}.json`;
}

/** The adapter's name as listings, <lora:NAME> tags and refusals give it (sanitised). */
export function adapterName(adapterPath: string): string {
  return cleanText(basename(adapterPath).replace(ADAPTER_EXTENSION, ''), LIMITS.text);
}

/** The error that using a refused adapter raises; `refusal` is what listings show. */
export class AdapterRefusedError extends RedlineError {
  constructor(readonly refusal: AdapterRefusal) {
    super(refusal.code, refusal.message, refusal.hint);
  }
}

// Messages and hints name files by their base name only: they reach API callers as job
// errors, and server paths are not theirs to see.
function sidecarRefusal(adapterPath: string, problem: string): AdapterRefusedError {
  const side = cleanText(basename(sidecarPath(adapterPath)), LIMITS.text);
  return new AdapterRefusedError({
    code: 'adapter_sidecar_invalid',
    message: `Adapter "${adapterName(adapterPath)}" is refused: its sidecar ${side} ${problem}. Its category and intensity calibration cannot be trusted, and it is not run ungraded.`,
    hint: `Restore ${side} beside the adapter from the adapter's release (or re-run its calibration): a JSON object such as {"category": "graphic-injury", "intensity": {"1": 0.3, "2": 0.6, "3": 0.9}}. \`redline loras\` lists each adapter's sidecar problems.`,
  });
}

/** The sidecar's text; null when there is none. Throws when it exists but cannot be used. */
function readSidecarText(adapterPath: string): string | null {
  const side = sidecarPath(adapterPath);
  let st;
  try {
    st = statSync(side);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      // A link to nowhere is a sidecar that went missing, not an adapter without one.
      let dangling = false;
      try {
        dangling = lstatSync(side).isSymbolicLink();
      } catch { /* no entry at all */ }
      if (!dangling) return null;
      throw sidecarRefusal(adapterPath, 'is a symbolic link to a file that does not exist');
    }
    throw sidecarRefusal(adapterPath, `cannot be read (${code ?? (err as Error).message})`);
  }
  // Checked before opening: opening a FIFO would wait for a writer.
  if (!st.isFile()) throw sidecarRefusal(adapterPath, 'is not a regular file');
  if (st.size > LIMITS.sidecarBytes) throw sidecarRefusal(adapterPath, `is ${st.size} bytes, over the ${LIMITS.sidecarBytes}-byte limit for a sidecar`);
  const buf = Buffer.alloc(LIMITS.sidecarBytes + 1);
  let n: number;
  try {
    const fd = openSync(side, 'r');
    try {
      n = readSync(fd, buf, 0, buf.length, 0);
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    throw sidecarRefusal(adapterPath, `cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  // The file may have grown since stat.
  if (n > LIMITS.sidecarBytes) throw sidecarRefusal(adapterPath, `is over the ${LIMITS.sidecarBytes}-byte limit for a sidecar`);
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(buf.subarray(0, n));
  } catch {
    throw sidecarRefusal(adapterPath, 'is not UTF-8 text (binary data?)');
  }
}

/** The adapter's safetensors metadata; {} for a file that is not a safetensors file. */
export function adapterMetadata(adapterPath: string): Record<string, string> {
  if (!/\.safetensors$/i.test(adapterPath) || !existsSync(adapterPath) || !statSync(adapterPath).isFile() || sniffFileKind(adapterPath) !== 'safetensors') return {};
  const f = SafetensorsFile.open(adapterPath);
  try {
    return f.metadata;
  } finally {
    f.close();
  }
}

/**
 * The sidecar NAME.json that governs the adapter at `adapterPath` (size-limited,
 * validated), or null when there is none. The sidecar carries the adapter's category and
 * intensity calibration, which the safety layer relies on, so an adapter is refused (a
 * RedlineError) rather than run ungraded when its sidecar exists but is unreadable, too
 * large, not JSON or invalid, when the sidecar or the adapter's metadata
 * (CATEGORY_METADATA_KEY) declares a hard-blocked or unknown category (SIDECAR_CATEGORIES
 * lists the known ones), and when the metadata declares a category that no sidecar
 * matches. `problems` are harmless warnings
 * (unknown fields). `metadata` is the adapter's safetensors metadata when already read.
 */
export function readSidecar(adapterPath: string, metadata?: Readonly<Record<string, string>>): { sidecar: AdapterSidecar | null; problems: string[] } {
  const name = adapterName(adapterPath);
  const side = cleanText(basename(sidecarPath(adapterPath)), LIMITS.text);
  const declared = (metadata ?? adapterMetadata(adapterPath))[CATEGORY_METADATA_KEY];
  if (declared !== undefined) refuseDeclaredCategory(name, side, declared, 'metadata');
  const text = readSidecarText(adapterPath);
  let sidecar: AdapterSidecar | null = null;
  let warnings: string[] = [];
  if (text !== null) {
    let raw: unknown;
    try {
      raw = JSON.parse(text.replace(/^\uFEFF/, ''));
    } catch (err) {
      throw sidecarRefusal(adapterPath, `is not valid JSON (${cleanText((err as Error).message, 120)})`);
    }
    const rawCategory = raw && typeof raw === 'object' && !Array.isArray(raw) ? (raw as Record<string, unknown>).category : undefined;
    if (typeof rawCategory === 'string') refuseDeclaredCategory(name, side, rawCategory, 'sidecar');
    const parsed = parseSidecar(raw);
    if (parsed.problems.length) throw sidecarRefusal(adapterPath, `is invalid: ${parsed.problems.join('; ')}`);
    sidecar = parsed.sidecar;
    warnings = parsed.warnings;
  }
  if (declared !== undefined && sidecar?.category !== declared) {
    const found = !sidecar ? `it has no sidecar ${side}` : sidecar.category ? `its sidecar ${side} says "${sidecar.category}"` : `its sidecar ${side} names no category`;
    throw new AdapterRefusedError({
      code: 'adapter_sidecar_missing',
      message: `Adapter "${name}" is refused: its metadata declares the category "${declared}" but ${found}, so its intensity calibration is unknown and it would run ungraded.`,
      hint: `Put the adapter's own ${side} beside it (with "category": "${declared}" and its "intensity" calibration), as released with the adapter or written by its training run.`,
    });
  }
  return { sidecar, problems: warnings };
}

/** Refuses a category declared by the metadata or the sidecar that is hard-blocked, malformed or unknown. */
function refuseDeclaredCategory(name: string, side: string, category: string, source: 'metadata' | 'sidecar'): void {
  const bad = sidecarCategoryProblem(category);
  if (!bad) return;
  const where = source === 'metadata' ? `its metadata key ${CATEGORY_METADATA_KEY}` : `its sidecar ${side}`;
  const shown = cleanText(category, 40);
  if (bad.kind === 'hard_blocked') {
    throw new AdapterRefusedError({
      code: 'adapter_category_hard_blocked',
      message: `Adapter "${name}" is refused: ${where} declares the category "${shown}", the hard-blocked category ${hardBlockedSidecarCategory(category)}. No policy, role or request allows it, so the adapter is never run or merged.`,
      hint: 'Remove the adapter from the LoRA folder: Redline does not run adapters made for hard-blocked content.',
    });
  }
  // A malformed category in the sidecar is one of its validation problems (sidecarRefusal).
  if (bad.kind === 'malformed') {
    if (source === 'sidecar') return;
    throw new AdapterRefusedError({
      code: 'adapter_category_invalid',
      message: `Adapter "${name}" is refused: its metadata key ${CATEGORY_METADATA_KEY} is "${shown}", not a category (1-40 lower-case letters, digits or dashes).`,
      hint: 'The file was altered or written by a faulty tool; use the adapter as released.',
    });
  }
  throw new AdapterRefusedError({
    code: 'adapter_category_unknown',
    message: `Adapter "${name}" is refused: ${where} declares the category "${shown}", which Redline does not know, so the policy cannot grade the adapter and it is not run ungraded. Known categories: ${SIDECAR_CATEGORIES.join(', ')}.`,
    hint: `Use a known category in ${side} (and in ${CATEGORY_METADATA_KEY}, if the file declares one): graphic-injury for an adapter that adds injury, blood or gore, graded by the policy's intensity levels, with its "intensity" calibration.`,
  });
}

/** Throws the refusal of a listed adapter, if it has one. */
export function assertAdapterUsable(adapter: Pick<AdapterListing, 'refusal'>): void {
  if (adapter.refusal) throw new AdapterRefusedError(adapter.refusal);
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
    name: adapterName(path),
    size: st.size,
    kind: 'unknown',
    family: 'unknown',
    keyCount: 0,
    hashes: null,
    meta: { topTags: [] },
    sidecar: null,
    refusal: null,
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
  try {
    const side = readSidecar(path, meta);
    entry.sidecar = side.sidecar;
    entry.warnings.push(...side.problems);
  } catch (err) {
    if (!(err instanceof AdapterRefusedError)) throw err;
    entry.refusal = err.refusal;
    entry.warnings.push(err.refusal.message);
  }
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
