// Reads an adapter .safetensors (kohya LoRA / LoCon, PEFT / diffusers LoRA, LyCORIS LoHa
// and LoKr), matches every key to a module of the loaded model, and checks that each
// module's delta has exactly the module's weight shape. Files are untrusted: names that
// match nothing, files for another family and shapes that do not fit are refused with the
// offending keys named; nothing is broadcast or silently skipped.
import { basename } from 'node:path';
import { RedlineError } from '../errors.ts';
import { loraFamily, FAMILY_NAMES, requireSafetensors } from '../models/checkpoint/detect.ts';
import { SafetensorsFile } from '../tensor/safetensors.ts';
import { as2d, kron, type Mat, numel, rebuildMid, rebuildTucker, upDown } from './delta.ts';
import type { AdaptedComponent, ModuleIndex, TargetModule } from './module-index.ts';

export type AdapterKind = 'lora' | 'locon' | 'loha' | 'lokr' | 'full';
export type AdapterFormat = 'kohya' | 'peft' | 'diffusers-legacy';

export interface AdapterModule {
  target: TargetModule;
  kind: AdapterKind;
  /** The file's keys that made this module. */
  keys: string[];
  /** Factors as stored (float32), by part name (lora_down, lora_up, lora_mid, hada_w1_a, lokr_w1, ...). */
  parts: Record<string, Mat>;
  /** alpha / rank, or 1 where the kind has no rank scaling. */
  scale: number;
  rank: number | null;
  alpha: number | null;
}

export interface LoadedAdapter {
  path: string;
  name: string;
  format: AdapterFormat;
  modules: AdapterModule[];
  /** Keys of the file that were applied / that matched no module of the model. */
  appliedKeyCount: number;
  unmatchedKeys: string[];
  totalKeys: number;
  metadata: Record<string, string>;
}

/** One line for logs/CLI: "applied 630 of 630 keys to 210 modules". */
export function describeMatch(a: LoadedAdapter): string {
  const base = `${a.name}: applied ${a.appliedKeyCount} of ${a.totalKeys} keys to ${a.modules.length} modules`;
  if (!a.unmatchedKeys.length) return base;
  return `${base}; ${a.unmatchedKeys.length} keys matched nothing (${sample(a.unmatchedKeys)})`;
}

function sample(list: string[], n = 4): string {
  return list.slice(0, n).join(', ') + (list.length > n ? `, ... (${list.length - n} more)` : '');
}

/** Recognised factor names, normalised to kohya/LyCORIS part names. */
const PART_SUFFIXES: Array<[RegExp, string]> = [
  [/\.lora_down\.weight$/, 'lora_down'],
  [/\.lora_up\.weight$/, 'lora_up'],
  [/\.lora_mid\.weight$/, 'lora_mid'],
  [/\.lora_A(\.default)?\.weight$/, 'lora_down'],
  [/\.lora_B(\.default)?\.weight$/, 'lora_up'],
  [/\.lora_linear_layer\.down\.weight$/, 'lora_down'],
  [/\.lora_linear_layer\.up\.weight$/, 'lora_up'],
  [/\.lora\.down\.weight$/, 'lora_down'],
  [/\.lora\.up\.weight$/, 'lora_up'],
  [/\.alpha$/, 'alpha'],
  [/\.(hada_w1_a|hada_w1_b|hada_w2_a|hada_w2_b|hada_t1|hada_t2)$/, '$1'],
  [/\.(lokr_w1|lokr_w1_a|lokr_w1_b|lokr_w2|lokr_w2_a|lokr_w2_b|lokr_t2)$/, '$1'],
  [/\.diff$/, 'diff'],
  // Parts of adapter kinds Redline does not apply: recognised so the refusal can name them.
  [/\.(dora_scale|lora_magnitude_vector(\.default)?(\.weight)?|oft_blocks|oft_diag|on_input|b_norm|w_norm|diff_b|a1\.weight|a2\.weight|b1\.weight|b2\.weight)$/, 'unsupported:$1'],
];

// diffusers' first LoRA format (attention processors): `attn1.processor.to_q_lora.down.weight`.
const LEGACY_PROCESSOR = /\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$/;

interface Split {
  moduleKey: string; // flat kohya name, or `${component}:${dotted path}`
  part: string;
  format: AdapterFormat;
}

function splitKey(key: string): Split | null {
  const legacy = LEGACY_PROCESSOR.exec(key);
  if (legacy) {
    const head = key.slice(0, legacy.index);
    const proj = legacy[1] === 'to_out' ? 'to_out.0' : legacy[1]!;
    const dotted = dottedModule(`${head}.${proj}`);
    return dotted ? { moduleKey: dotted, part: legacy[2] === 'down' ? 'lora_down' : 'lora_up', format: 'diffusers-legacy' } : null;
  }
  for (const [re, part] of PART_SUFFIXES) {
    const m = re.exec(key);
    if (!m) continue;
    const head = key.slice(0, m.index);
    const partName = m[0].replace(re, part);
    if (/^lora_(unet|te\d?)_/.test(head) && !head.includes('.')) return { moduleKey: head, part: partName, format: 'kohya' };
    const dotted = dottedModule(head);
    if (!dotted) return null;
    const fmt: AdapterFormat = /lora_linear_layer|\.lora\.(down|up)/.test(key) ? 'diffusers-legacy' : 'peft';
    return { moduleKey: dotted, part: partName, format: fmt };
  }
  return null;
}

/** `unet.x.y` / `text_encoder.x.y` (optionally under PEFT's base_model.model.) -> `component:x.y`. */
function dottedModule(head: string): string | null {
  const h = head.replace(/^base_model\.model\./, '');
  if (h.startsWith('unet.')) return `unet:${h.slice(5)}`;
  if (h.startsWith('text_encoder.')) return `text_encoder:${h.slice(13)}`;
  return null;
}

export interface LoadAdapterOptions {
  /** Name used in messages and prompts (default: file name without extension). */
  name?: string;
}

export function loadAdapter(path: string, index: ModuleIndex, opts: LoadAdapterOptions = {}): LoadedAdapter {
  requireSafetensors(path);
  const name = opts.name ?? basename(path).replace(/\.safetensors$/i, '');
  const file = SafetensorsFile.open(path);
  try {
    const keys = file.keys();
    const family = loraFamily(keys);
    if (family !== 'sd1') {
      throw new RedlineError(
        'adapter_family_mismatch',
        `${name} is a LoRA for ${FAMILY_NAMES[family]}, not for Stable Diffusion 1.x (its keys name modules SD 1.x does not have, e.g. ${sample(keys.filter((k) => loraFamily([k]) !== 'sd1'), 2)}).`,
        'Use a LoRA trained on an SD 1.5-family model.',
      );
    }

    const groups = new Map<string, { target: TargetModule; parts: Map<string, string> }>();
    const unmatched: string[] = [];
    const unsupported = new Map<string, string[]>();
    const formats = new Set<AdapterFormat>();
    for (const key of keys) {
      const s = splitKey(key);
      const target = s ? (s.moduleKey.includes(':') ? index.byDottedName.get(s.moduleKey) : index.byFlatName.get(s.moduleKey)) : undefined;
      if (!s || !target) {
        unmatched.push(key);
        continue;
      }
      if (s.part.startsWith('unsupported:')) {
        const kind = s.part.slice('unsupported:'.length);
        unsupported.set(kind, [...(unsupported.get(kind) ?? []), key]);
        continue;
      }
      formats.add(s.format);
      const id = `${target.component}:${target.module}`;
      const g = groups.get(id) ?? { target, parts: new Map<string, string>() };
      if (g.parts.has(s.part)) {
        throw new RedlineError('adapter_invalid', `${name} has two "${s.part}" tensors for ${target.module} (${g.parts.get(s.part)} and ${key}).`, 'The file mixes two naming schemes for the same module; re-export it.');
      }
      g.parts.set(s.part, key);
      groups.set(id, g);
    }
    if (unsupported.size) {
      const kinds = [...unsupported.keys()].map((k) => k.replace(/\.weight$|\.default$/g, ''));
      throw new RedlineError(
        'adapter_unsupported',
        `${name} uses adapter parts Redline does not apply (${[...new Set(kinds)].join(', ')}; e.g. ${sample([...unsupported.values()].flat(), 2)}).`,
        'Supported: LoRA / LoCon (kohya, PEFT), LoHa, LoKr. Convert DoRA/OFT/IA3 adapters to plain LoRA first.',
      );
    }
    if (groups.size === 0) {
      throw new RedlineError(
        'adapter_no_match',
        `${name}: none of its ${keys.length} keys match a module of this SD 1.x model (${unmatched.length} unmatched, e.g. ${sample(unmatched, 3)}).`,
        'It is probably an adapter for another model family or another kind of network (e.g. a textual-inversion embedding).',
      );
    }

    refuseWideTextStates(name, groups.values(), (key) => file.info(key).shape);

    const modules: AdapterModule[] = [];
    let applied = 0;
    for (const { target, parts } of groups.values()) {
      const mats: Record<string, Mat> = {};
      let alpha: number | null = null;
      for (const [part, key] of parts) {
        const t = file.get(key);
        if (part === 'alpha') {
          if (t.numel !== 1) throw new RedlineError('adapter_invalid', `${name}: ${key} should be a single number, has shape [${t.shape.join(', ')}].`);
          alpha = t.toFloat32()[0]!;
          if (!Number.isFinite(alpha)) throw new RedlineError('adapter_invalid', `${name}: ${key} is not a finite number.`);
        } else {
          const data = t.toFloat32();
          // toFloat32 returns the file buffer itself for f32; copy so modules own their data.
          mats[part] = { data: t.dtype === 'f32' ? new Float32Array(data) : data, shape: [...t.shape] };
        }
      }
      const mod = buildModule(name, target, mats, alpha, [...parts.values()]);
      checkDeltaShape(name, mod);
      modules.push(mod);
      applied += parts.size;
    }

    const metaAlpha = peftAlphas(file.metadata);
    if (metaAlpha) for (const m of modules) applyPeftAlpha(m, metaAlpha);

    const format: AdapterFormat = formats.has('kohya') ? 'kohya' : formats.has('peft') ? 'peft' : 'diffusers-legacy';
    return { path, name, format, modules, appliedKeyCount: applied, unmatchedKeys: unmatched, totalKeys: keys.length, metadata: file.metadata };
  } finally {
    file.close();
  }
}

/**
 * SD 2.x and SDXL LoRAs use the same module names as SD 1.x for most of the UNet; the width
 * of the text states their cross-attention reads (1024 / 2048 instead of 768) gives them away.
 */
function refuseWideTextStates(
  name: string,
  groups: Iterable<{ target: TargetModule; parts: Map<string, string> }>,
  shapeOf: (key: string) => number[],
): void {
  for (const { target, parts } of groups) {
    if (!/attn2\.to_[kv]$/.test(target.module)) continue;
    const down = parts.get('lora_down') ?? parts.get('hada_w1_b');
    if (!down) continue;
    const width = shapeOf(down)[1];
    if (width === target.shape[1]) continue;
    const family = width === 1024 ? 'sd2' : width === 2048 ? 'sdxl' : null;
    if (family) {
      throw new RedlineError(
        'adapter_family_mismatch',
        `${name} is a LoRA for ${FAMILY_NAMES[family]}: its cross-attention reads ${width}-wide text states (${down}), SD 1.x uses ${target.shape[1]}.`,
        'Use a LoRA trained on an SD 1.5-family model.',
      );
    }
  }
}

function need(name: string, target: TargetModule, mats: Record<string, Mat>, part: string): Mat {
  const m = mats[part];
  if (!m) throw new RedlineError('adapter_invalid', `${name}: module ${target.module} lacks its ${part} tensor.`, 'The file is incomplete or corrupt.');
  return m;
}

/** kohya: alpha missing or 0 means alpha = rank (scale 1). */
function rankScale(alpha: number | null, rank: number): number {
  return alpha === null || alpha === 0 ? 1 : alpha / rank;
}

function buildModule(name: string, target: TargetModule, mats: Record<string, Mat>, alpha: number | null, keys: string[]): AdapterModule {
  const base = { target, keys, parts: mats, alpha };
  if (mats.lora_down || mats.lora_up) {
    const down = need(name, target, mats, 'lora_down');
    need(name, target, mats, 'lora_up');
    const rank = down.shape[0]!;
    const spatial = down.shape.length === 4 && (down.shape[2] !== 1 || down.shape[3] !== 1);
    return { ...base, kind: spatial || mats.lora_mid ? 'locon' : 'lora', rank, scale: rankScale(alpha, rank) };
  }
  if (mats.hada_w1_a || mats.hada_w1_b || mats.hada_w2_a || mats.hada_w2_b) {
    for (const p of ['hada_w1_a', 'hada_w1_b', 'hada_w2_a', 'hada_w2_b']) need(name, target, mats, p);
    const rank = mats.hada_w1_b!.shape[0]!;
    return { ...base, kind: 'loha', rank, scale: rankScale(alpha, rank) };
  }
  if (Object.keys(mats).some((p) => p.startsWith('lokr_'))) {
    if (!mats.lokr_w1 && !(mats.lokr_w1_a && mats.lokr_w1_b)) throw new RedlineError('adapter_invalid', `${name}: LoKr module ${target.module} has neither lokr_w1 nor lokr_w1_a/_b.`);
    if (!mats.lokr_w2 && !(mats.lokr_w2_a && mats.lokr_w2_b)) throw new RedlineError('adapter_invalid', `${name}: LoKr module ${target.module} has neither lokr_w2 nor lokr_w2_a/_b.`);
    // LyCORIS scales by alpha/rank only when a factor is low-rank; two full factors mean scale 1.
    const rank = mats.lokr_w1_b?.shape[0] ?? mats.lokr_w2_b?.shape[0] ?? null;
    return { ...base, kind: 'lokr', rank, scale: rank === null ? 1 : rankScale(alpha, rank) };
  }
  if (mats.diff) return { ...base, kind: 'full', rank: null, scale: 1 };
  throw new RedlineError('adapter_invalid', `${name}: module ${target.module} has only ${Object.keys(mats).join(', ') || 'alpha'}; no weights to apply.`);
}

/** The unscaled delta of one module, shaped like the target weight. */
export function moduleDelta(m: AdapterModule, label = m.target.module): Mat {
  const p = m.parts;
  const shape = m.target.shape;
  let data: Float32Array;
  let produced: number[];
  switch (m.kind) {
    case 'lora':
    case 'locon': {
      if (p.lora_mid) {
        const r = rebuildMid(p.lora_up!, p.lora_down!, p.lora_mid);
        data = r.data;
        produced = r.shape;
      } else {
        const r = upDown(p.lora_up!, p.lora_down!, label);
        data = r.data;
        produced = p.lora_down!.shape.length === 4 ? [r.rows, ...p.lora_down!.shape.slice(1)] : [r.rows, r.cols];
      }
      break;
    }
    case 'loha': {
      const w1 = p.hada_t1 ? rebuildTucker(p.hada_t1, p.hada_w1_a!, p.hada_w1_b!) : matOf(upDown(p.hada_w1_a!, p.hada_w1_b!, label));
      const w2 = p.hada_t2 ? rebuildTucker(p.hada_t2, p.hada_w2_a!, p.hada_w2_b!) : matOf(upDown(p.hada_w2_a!, p.hada_w2_b!, label));
      if (w1.data.length !== w2.data.length) throw shapeError(label, `LoHa halves have ${w1.data.length} and ${w2.data.length} elements`);
      data = new Float32Array(w1.data.length);
      for (let i = 0; i < data.length; i++) data[i] = w1.data[i]! * w2.data[i]!;
      produced = w1.shape.length >= w2.shape.length ? w1.shape : w2.shape;
      break;
    }
    case 'lokr': {
      const w1 = p.lokr_w1 ?? matOf(upDown(p.lokr_w1_a!, p.lokr_w1_b!, label));
      const w2 = p.lokr_w2 ?? (p.lokr_t2 ? rebuildTucker(p.lokr_t2, p.lokr_w2_a!, p.lokr_w2_b!) : matOf(upDown(p.lokr_w2_a!, p.lokr_w2_b!, label)));
      const k = kron(w1, w2);
      data = k.data;
      produced = k.shape;
      break;
    }
    case 'full':
      data = p.diff!.data;
      produced = p.diff!.shape;
      break;
  }
  // Same element count and same output rows; 1x1 convs and linears are interchangeable
  // (A1111 reshapes between them), anything else is a mismatch, never a broadcast.
  const fits = data.length === numel(shape) && produced[0] === shape[0] && (produced.length === shape.length || numel(produced.slice(1)) === numel(shape.slice(1)));
  const spatialOk = produced.length !== 4 || shape.length !== 4 || (produced[2] === shape[2] && produced[3] === shape[3]);
  if (!fits || !spatialOk) throw shapeError(label, `the adapter produces [${produced.join(', ')}] but the model weight is [${shape.join(', ')}]`);
  return { data, shape: [...shape] };
}

function matOf(r: { data: Float32Array; rows: number; cols: number }): Mat {
  return { data: r.data, shape: [r.rows, r.cols] };
}

function shapeError(label: string, what: string): RedlineError {
  return new RedlineError('adapter_shape_mismatch', `${label}: ${what}.`, 'The adapter was made for a model with other layer sizes (another family or variant); it cannot be applied.');
}

/** Checks shapes from the factor shapes alone, before any arithmetic. */
function checkDeltaShape(name: string, m: AdapterModule): void {
  const t = m.target.shape;
  const out = t[0]!;
  const inFlat = numel(t.slice(1));
  const label = `${name}: ${m.target.component} module ${m.target.module}`;
  if (m.kind === 'lora' || m.kind === 'locon') {
    const up = as2d(m.parts.lora_up!);
    const down = as2d(m.parts.lora_down!);
    const mid = m.parts.lora_mid;
    const rowsOk = up.rows === out;
    const colsOk = mid ? down.cols * numel(mid.shape.slice(2)) === inFlat : down.cols === inFlat;
    const rankOk = mid ? up.cols === mid.shape[0] && down.rows === mid.shape[1] : up.cols === down.rows;
    if (!rowsOk || !colsOk || !rankOk) {
      throw shapeError(label, `up [${m.parts.lora_up!.shape.join(', ')}] x down [${m.parts.lora_down!.shape.join(', ')}]${mid ? ` (mid [${mid.shape.join(', ')}])` : ''} does not make its weight [${t.join(', ')}]`);
    }
    return;
  }
  moduleDelta(m, label); // small kinds: checking by building is cheap enough and exact
}

/** diffusers writes LoRA config (r, lora_alpha, alpha_pattern) as JSON in the metadata. */
interface PeftAlpha {
  unet?: { alpha?: number; pattern: Record<string, number> };
  text_encoder?: { alpha?: number; pattern: Record<string, number> };
}

function peftAlphas(meta: Record<string, string>): PeftAlpha | null {
  const raw = meta.lora_adapter_metadata;
  if (!raw) return null;
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(raw) as Record<string, unknown>;
  } catch {
    throw new RedlineError('adapter_invalid', 'the lora_adapter_metadata of this file is not valid JSON.');
  }
  const out: PeftAlpha = {};
  for (const c of ['unet', 'text_encoder'] as const) {
    const alpha = j[`${c}.lora_alpha`];
    const pattern = j[`${c}.alpha_pattern`];
    if (typeof alpha === 'number' || (pattern && typeof pattern === 'object')) {
      const pat: Record<string, number> = {};
      if (pattern && typeof pattern === 'object') for (const [k, v] of Object.entries(pattern)) if (typeof v === 'number') pat[k] = v;
      out[c] = { alpha: typeof alpha === 'number' ? alpha : undefined, pattern: pat };
    }
  }
  return Object.keys(out).length ? out : null;
}

function applyPeftAlpha(m: AdapterModule, meta: PeftAlpha): void {
  if (m.alpha !== null || m.rank === null) return; // an explicit .alpha tensor wins
  const c = meta[m.target.component as AdaptedComponent];
  if (!c) return;
  let alpha = c.alpha;
  for (const [pat, v] of Object.entries(c.pattern)) if (m.target.module === pat || m.target.module.endsWith(`.${pat}`)) alpha = v;
  if (alpha === undefined) return;
  m.alpha = alpha;
  m.scale = alpha / m.rank;
}
