// A1111's `parameters` infotext (the PNG text chunk that A1111's "PNG Info" and Civitai
// read): written as modules/processing.py create_infotext writes it, read as
// modules/infotext_utils.py parse_generation_parameters reads it.
//
//   <prompt, may span lines>
//   Negative prompt: <negative prompt, may span lines>
//   Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x512, ...
import { RedlineError } from '../errors.ts';

export type InfotextValue = string | number | boolean;
/** Parameters in output order; null/undefined entries are left out, as A1111 drops None. */
export type InfotextParams = ReadonlyArray<readonly [string, InfotextValue | null | undefined]>;

// Python's str.isspace() set (str.strip() and \s in a str regex).
const PY_WS = '\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const PY_STRIP = new RegExp(`^[${PY_WS}]+|[${PY_WS}]+$`, 'gu');
const pyStrip = (s: string): string => s.replace(PY_STRIP, '');

/** Python's repr() of a float, which str() and f-strings use: exponent form below 1e-4 and from 1e16. */
function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'nan';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  const [mantissa, expText] = x.toExponential().split('e') as [string, string];
  const exp = Number(expText);
  if (exp < -4 || exp >= 16) {
    const sign = exp < 0 ? '-' : '+';
    return `${mantissa}e${sign}${String(Math.abs(exp)).padStart(2, '0')}`;
  }
  return String(x);
}

/**
 * A value as A1111's f-string prints it. Integral numbers print without a fraction, as
 * the web UI's sliders send them (A1111's API, given floats, writes "7.0": pass a string
 * to reproduce that).
 */
export function infotextValueText(value: InfotextValue): string {
  if (typeof value === 'boolean') return value ? 'True' : 'False';
  if (typeof value === 'number') return Number.isInteger(value) && Math.abs(value) < 1e16 ? String(value) : pythonFloatRepr(value);
  return value;
}

/** A1111's quote(): a value with ',', ':' or a newline is written as a JSON string. */
export function quoteInfotextValue(value: InfotextValue): string {
  const text = infotextValueText(value);
  if (!text.includes(',') && !text.includes('\n') && !text.includes(':')) return text;
  // json.dumps(..., ensure_ascii=False) and JSON.stringify escape the same characters.
  return JSON.stringify(text);
}

/** A1111's unquote(): a "quoted" value is JSON-decoded; anything that fails stays as it is. */
export function unquoteInfotextValue(text: string): string {
  if (text.length === 0 || text[0] !== '"' || text[text.length - 1] !== '"') return text;
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'string' ? v : text;
  } catch {
    return text;
  }
}

/** The infotext: prompt, "Negative prompt: " line if any, then "Key: value, ..." (A1111's create_infotext). */
export function formatInfotext(prompt: string, negativePrompt: string, params: InfotextParams): string {
  const paramsText = params
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => {
      const value = v as InfotextValue;
      // A1111 writes a bare key when the value is that same string (flag-style entries).
      return value === k ? k : `${k}: ${quoteInfotextValue(value)}`;
    })
    .join(', ');
  const negativeText = negativePrompt ? `\nNegative prompt: ${negativePrompt}` : '';
  return pyStrip(`${prompt}${negativeText}\n${paramsText}`);
}

export interface ParsedInfotext {
  prompt: string;
  negativePrompt: string;
  /**
   * Parameters as text, in order of appearance, quoted values decoded. A value of the
   * form WxH is split into "<key>-1" and "<key>-2" (e.g. Size-1, Size-2), as A1111 does.
   */
  params: Record<string, string>;
}

// A1111's re_param with Python's Unicode \w and \s.
const PARAM = new RegExp(
  `[${PY_WS}]*([\\p{L}\\p{N}_][\\p{L}\\p{N}_ \\-/]+):[${PY_WS}]*("(?:\\\\.|[^\\\\"])+"|[^,]*)(?:,|$)`, 'gu');
const IMAGE_SIZE = /^(\p{Nd}+)x(\p{Nd}+)$/u;

function digitsToAscii(s: string): string {
  return s.replace(/\p{Nd}/gu, (d) => {
    let cp = d.codePointAt(0)!;
    if (cp <= 0x39) return d;
    let offset = 0;
    while (/\p{Nd}/u.test(String.fromCodePoint(cp - 1))) {
      cp--;
      offset++;
    }
    return String(offset % 10);
  });
}

/**
 * Reads an infotext as A1111's parse_generation_parameters does (without the UI's pasting
 * defaults): the last line holds the parameters if it has at least 3 "Key: value" pairs,
 * otherwise it belongs to the prompt; lines from "Negative prompt:" on form the negative
 * prompt; every line is stripped; an empty value is skipped (A1111 skips it on an error).
 */
export function parseInfotext(text: string): ParsedInfotext {
  const lines = pyStrip(text).split('\n');
  let lastLine = lines.pop()!;
  if ([...lastLine.matchAll(PARAM)].length < 3) {
    lines.push(lastLine);
    lastLine = '';
  }
  let prompt = '';
  let negativePrompt = '';
  let doneWithPrompt = false;
  for (let line of lines) {
    line = pyStrip(line);
    if (line.startsWith('Negative prompt:')) {
      doneWithPrompt = true;
      line = pyStrip(line.slice(16));
    }
    if (doneWithPrompt) negativePrompt += (negativePrompt === '' ? '' : '\n') + line;
    else prompt += (prompt === '' ? '' : '\n') + line;
  }
  const params: Record<string, string> = {};
  for (const m of lastLine.matchAll(PARAM)) {
    const key = m[1]!;
    let value = m[2]!;
    if (value.length === 0) continue;
    if (value[0] === '"' && value[value.length - 1] === '"') value = unquoteInfotextValue(value);
    const size = IMAGE_SIZE.exec(value);
    if (size) {
      params[`${key}-1`] = digitsToAscii(size[1]!);
      params[`${key}-2`] = digitsToAscii(size[2]!);
    } else {
      params[key] = value;
    }
  }
  return { prompt, negativePrompt, params };
}

/** A LoRA as A1111 lists it under "Lora hashes": the name used in the prompt, its short hash (models/checkpoint/hash.ts loraShortHash). */
export interface LoraHash {
  name: string;
  hash: string;
}

/** `name: hash, name2: hash2` with ':' and ',' taken out of names (A1111's remove_symbols). */
export function formatLoraHashes(loras: readonly LoraHash[]): string {
  return loras.map((l) => `${l.name.replace(/[:,]/g, '')}: ${l.hash}`).join(', ');
}

/** Reads "Lora hashes" back into name/hash pairs. */
export function parseLoraHashes(value: string): LoraHash[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .map((item) => {
      const colon = item.indexOf(':');
      if (colon < 0) {
        throw new RedlineError('infotext_bad_lora_hashes', `"Lora hashes" entry "${item}" is not "name: hash".`);
      }
      return { name: item.slice(0, colon).trim(), hash: item.slice(colon + 1).trim() };
    });
}

/** What a Redline generation records, named after A1111's infotext fields. */
export interface GenerationInfo {
  prompt: string;
  negativePrompt: string;
  steps: number;
  /** A1111 sampler name (e.g. "Euler a", "DPM++ 2M"); a Redline name such as "DPM++ 2M Karras" is split, see a1111Sampler. */
  sampler: string;
  cfgScale: number;
  seed: number;
  width: number;
  height: number;
  /** First 10 hex digits of the checkpoint's SHA-256 (models/checkpoint/hash.ts modelShortHash). */
  modelHash?: string;
  /** Checkpoint name: file name without extension. */
  model?: string;
  /** Separate VAE, when one is used: its short hash and file name. */
  vaeHash?: string;
  vae?: string;
  /** img2img strength, or the hires fix's second-pass strength. */
  denoisingStrength?: number;
  /** Written only above 1, as A1111 does. */
  clipSkip?: number;
  /** 'cpu' is written as "RNG: CPU"; 'gpu' is A1111's default and is left out. */
  rng?: 'cpu' | 'gpu';
  loras?: readonly LoraHash[];
  /** Hires fix: A1111's hr_* fields as it writes them (see HiresInfo). */
  hires?: HiresInfo;
  /** A1111's pad_cond_uncond padded the last denoiser call of a pass: "Pad conds: True". */
  padConds?: boolean;
  /** More "Key: value" pairs, written after the standard ones and before Version (A1111's extra_generation_params). */
  extra?: InfotextParams;
  version?: string;
}

/**
 * The hires fix's infotext fields, A1111's extra_generation_params in the order its txt2img
 * init() sets them: "Hires checkpoint" (when hr_checkpoint_name named one), "Hires sampler" (A1111's name, when it differs from the first pass's),
 * "Hires prompt" and "Hires negative prompt" (when they differ from the first pass's),
 * "Hires schedule type" (its place is reserved in init(), the value set while sampling),
 * then calculate_target_resolution()'s "Hires upscale" (hr_scale, when no resize target
 * is set) or "Hires resize" ("XxY" as requested, a 0 kept), "Hires steps" (only when
 * hr_second_pass_steps is not 0), "Hires upscaler" (only when the request named one). The
 * second pass's strength is GenerationInfo.denoisingStrength ("Denoising strength").
 */
export interface HiresInfo {
  /** hr_checkpoint_name when one was named: the checkpoint's short title, "name [hash]". */
  checkpoint?: string;
  sampler?: string;
  prompt?: string;
  negativePrompt?: string;
  scheduleType?: string;
  upscale?: number;
  resize?: { x: number; y: number };
  steps?: number;
  upscaler?: string;
}

/**
 * A1111 ≥ 1.9 writes the schedule separately: "DPM++ 2M Karras" is Sampler "DPM++ 2M" with
 * Schedule type "Karras"; every other sampler has Schedule type "Automatic".
 */
export function a1111Sampler(name: string): { sampler: string; scheduleType: string } {
  const m = /^(.*) Karras$/.exec(name);
  return m ? { sampler: m[1]!, scheduleType: 'Karras' } : { sampler: name, scheduleType: 'Automatic' };
}

/** The sampler an infotext names, in Redline's spelling ("DPM++ 2M" + Karras -> "DPM++ 2M Karras"). */
export function samplerFromInfotext(params: Record<string, string>): string | undefined {
  const sampler = params['Sampler'];
  if (sampler === undefined) return undefined;
  const schedule = params['Schedule type'];
  if (schedule === undefined || schedule === 'Automatic' || sampler.endsWith(` ${schedule}`)) return sampler;
  return `${sampler} ${schedule}`;
}

/** The parameter list in A1111's create_infotext order. */
export function generationParams(info: GenerationInfo): InfotextParams {
  const { sampler, scheduleType } = a1111Sampler(info.sampler);
  const loraHashes = info.loras && info.loras.length > 0 ? formatLoraHashes(info.loras) : undefined;
  return [
    ['Steps', info.steps],
    ['Sampler', sampler],
    ['Schedule type', scheduleType],
    ['CFG scale', info.cfgScale],
    ['Seed', info.seed],
    ['Size', `${info.width}x${info.height}`],
    ['Model hash', info.modelHash],
    ['Model', info.model],
    ['VAE hash', info.vaeHash],
    ['VAE', info.vae],
    ['Denoising strength', info.denoisingStrength],
    ['Clip skip', info.clipSkip !== undefined && info.clipSkip > 1 ? info.clipSkip : undefined],
    ['RNG', info.rng === 'cpu' ? 'CPU' : undefined],
    // A1111 sets these in init(), before the extra networks of each batch add "Lora hashes".
    ['Hires checkpoint', info.hires?.checkpoint],
    ['Hires sampler', info.hires?.sampler],
    ['Hires prompt', info.hires?.prompt],
    ['Hires negative prompt', info.hires?.negativePrompt],
    ['Hires schedule type', info.hires?.scheduleType],
    ['Hires upscale', info.hires && !info.hires.resize ? info.hires.upscale : undefined],
    ['Hires resize', info.hires?.resize ? `${info.hires.resize.x}x${info.hires.resize.y}` : undefined],
    ['Hires steps', info.hires?.steps ? info.hires.steps : undefined],
    ['Hires upscaler', info.hires?.upscaler],
    ['Lora hashes', loraHashes],
    // Set by the sampler after a pass, once the networks were activated.
    ['Pad conds', info.padConds ? true : undefined],
    ...(info.extra ?? []),
    ['Version', info.version],
  ];
}

export function generationInfotext(info: GenerationInfo): string {
  return formatInfotext(info.prompt, info.negativePrompt, generationParams(info));
}
