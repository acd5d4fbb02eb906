// A1111 prompt syntax: attention weights (modules/prompt_parser.py parse_prompt_attention)
// and extra-network tags such as <lora:name:weight> (modules/extra_networks.py plus the
// built-in Lora extension). Weights are multiplied in the same order as A1111 does, so the
// float64 values are bit-identical to Python's.
import { RedlineError } from '../errors.ts';

/** A piece of prompt text and its attention multiplier. `BREAK` pieces carry weight -1. */
export interface WeightedText {
  text: string;
  weight: number;
}

export const BREAK_WEIGHT = -1;
export const ROUND_BRACKET_MULTIPLIER = 1.1;
export const SQUARE_BRACKET_MULTIPLIER = 1 / 1.1;

// Python's str.isspace() set, which is what \s means in a Python str regex: Unicode
// White_Space plus the information separators U+001C..U+001F.
const PY_WS = '\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
// Python's \w in a str pattern: letters, numbers (isalnum) and underscore.
const PY_WORD = '\\p{L}\\p{N}_';

// Alternatives in A1111's order: escapes, a lone backslash, openers, ':weight)' closer,
// closers, plain text, a lone colon.
const ATTENTION_TOKEN = new RegExp(
  [
    '\\\\\\(', '\\\\\\)', '\\\\\\[', '\\\\\\]', '\\\\\\\\', '\\\\',
    '\\(', '\\[',
    `:[${PY_WS}]*([+\\-]?[.\\p{Nd}]+)[${PY_WS}]*\\)`,
    '\\)', '\\]',
    '[^\\\\()\\[\\]:]+',
    ':',
  ].join('|'),
  'gu',
);
// \s*\bBREAK\b\s* with Python's Unicode \b.
const BREAK_SPLIT = new RegExp(`[${PY_WS}]*(?<![${PY_WORD}])BREAK(?![${PY_WORD}])[${PY_WS}]*`, 'u');

/** Value of a Unicode decimal digit: Nd characters come in runs of ten starting at zero. */
function digitValue(ch: string): number {
  let cp = ch.codePointAt(0)!;
  if (cp >= 0x30 && cp <= 0x39) return cp - 0x30;
  let offset = 0;
  while (/\p{Nd}/u.test(String.fromCodePoint(cp - 1))) {
    cp--;
    offset++;
  }
  return offset % 10;
}

/**
 * Python's float() for the strings A1111's regexes let through ([+-]?[.digits]+ in weights;
 * free text in extra-network arguments). Returns undefined where Python raises ValueError.
 */
export function pythonFloat(text: string): number | undefined {
  let s = text.replace(new RegExp(`^[${PY_WS}]+|[${PY_WS}]+$`, 'gu'), '');
  s = s.replace(/\p{Nd}/gu, (d) => String(digitValue(d)));
  if (/^[+-]?(inf|infinity)$/i.test(s)) return s.startsWith('-') ? -Infinity : Infinity;
  if (/^[+-]?nan$/i.test(s)) return NaN;
  // Underscores are allowed between digits only.
  if (!/^[+-]?(\d(_?\d)*(\.(\d(_?\d)*)?)?|\.\d(_?\d)*)(e[+-]?\d(_?\d)*)?$/i.test(s)) return undefined;
  return Number(s.replace(/_/g, ''));
}

/**
 * Splits a prompt into text pieces with attention weights, as A1111's
 * parse_prompt_attention: (x) x1.1, [x] /1.1, (x:w) xw, \( \) \[ \] \\ literals, a lone
 * backslash dropped, unclosed brackets applied to the rest of the prompt, unmatched
 * closers kept as text, BREAK (a whole word, any case-sensitive 'BREAK') as a separator
 * with weight -1, adjacent pieces of equal weight merged.
 */
export function parsePromptAttention(prompt: string): WeightedText[] {
  const res: WeightedText[] = [];
  const roundBrackets: number[] = [];
  const squareBrackets: number[] = [];

  const multiplyRange = (start: number, multiplier: number): void => {
    for (let p = start; p < res.length; p++) res[p]!.weight *= multiplier;
  };

  for (const m of prompt.matchAll(ATTENTION_TOKEN)) {
    const text = m[0];
    const weight = m[1];
    if (text.startsWith('\\')) {
      res.push({ text: text.slice(1), weight: 1.0 });
    } else if (text === '(') {
      roundBrackets.push(res.length);
    } else if (text === '[') {
      squareBrackets.push(res.length);
    } else if (weight !== undefined && roundBrackets.length > 0) {
      const value = pythonFloat(weight);
      if (value === undefined) {
        // A1111 fails the whole generation here (float() raises); so do we, with a reason.
        throw new RedlineError('prompt_bad_weight', `Prompt weight "${weight}" in "${text}" is not a number.`,
          'Write weights like (word:1.2); escape literal brackets as \\( \\).');
      }
      multiplyRange(roundBrackets.pop()!, value);
    } else if (text === ')' && roundBrackets.length > 0) {
      multiplyRange(roundBrackets.pop()!, ROUND_BRACKET_MULTIPLIER);
    } else if (text === ']' && squareBrackets.length > 0) {
      multiplyRange(squareBrackets.pop()!, SQUARE_BRACKET_MULTIPLIER);
    } else {
      const parts = text.split(BREAK_SPLIT);
      parts.forEach((part, i) => {
        if (i > 0) res.push({ text: 'BREAK', weight: BREAK_WEIGHT });
        res.push({ text: part, weight: 1.0 });
      });
    }
  }

  for (const pos of roundBrackets) multiplyRange(pos, ROUND_BRACKET_MULTIPLIER);
  for (const pos of squareBrackets) multiplyRange(pos, SQUARE_BRACKET_MULTIPLIER);

  if (res.length === 0) res.push({ text: '', weight: 1.0 });

  for (let i = 0; i + 1 < res.length;) {
    if (res[i]!.weight === res[i + 1]!.weight) {
      res[i]!.text += res[i + 1]!.text;
      res.splice(i + 1, 1);
    } else {
      i++;
    }
  }
  return res;
}

/** A `<lora:...>` tag: network name and its text-encoder and UNet multipliers. */
export interface LoraTag {
  name: string;
  te: number;
  unet: number;
  /** `dyn` rank limit (4th positional or dyn=N), when given. */
  dyn?: number;
  /** The tag as written, e.g. "<lora:detail:0.5>". */
  tag: string;
}

/** Any other extra-network tag (e.g. `<hypernet:name:1>`), with its raw ':'-split items. */
export interface ExtraNetworkTag {
  kind: string;
  items: string[];
  tag: string;
}

export interface ExtractedNetworks {
  /** The prompt with every extra-network tag removed (nothing else changed). */
  prompt: string;
  loras: LoraTag[];
  /** Tags of other kinds, removed from the prompt as A1111 does; the caller decides. */
  others: ExtraNetworkTag[];
}

// A1111: <(\w+):([^>]+)> with Python's Unicode \w.
const EXTRA_NETWORK_TAG = new RegExp(`<([${PY_WORD}]+):([^>]+)>`, 'gu');
/** A1111 registers the LoRA network under 'lora' and the alias 'lyco'. */
const LORA_KINDS = new Set(['lora', 'lyco']);

function loraMultiplier(value: string, tag: string, what: string): number {
  const v = pythonFloat(value);
  if (v === undefined || !Number.isFinite(v)) {
    throw new RedlineError('prompt_bad_lora', `${tag}: ${what} "${value}" is not a finite number.`,
      'Write LoRA tags as <lora:name:weight>, <lora:name:te:unet> or <lora:name:te=X:unet=Y>.');
  }
  return v;
}

function parseLora(items: string[], tag: string): LoraTag {
  // ExtraNetworkParams: an item with exactly one '=' is named, anything else positional.
  const positional: string[] = [];
  const named = new Map<string, string>();
  for (const item of items) {
    const parts = item.split('=');
    if (parts.length === 2) named.set(parts[0]!, parts[1]!);
    else positional.push(item);
  }
  const name = positional[0];
  if (name === undefined) {
    throw new RedlineError('prompt_bad_lora', `${tag} names no LoRA.`, 'Write LoRA tags as <lora:name:weight>.');
  }
  let te = positional.length > 1 ? loraMultiplier(positional[1]!, tag, 'text-encoder weight') : 1.0;
  if (named.has('te')) te = loraMultiplier(named.get('te')!, tag, 'te');
  let unet = positional.length > 2 ? loraMultiplier(positional[2]!, tag, 'UNet weight') : te;
  if (named.has('unet')) unet = loraMultiplier(named.get('unet')!, tag, 'unet');
  let dynText = positional.length > 3 ? positional[3] : undefined;
  if (named.has('dyn')) dynText = named.get('dyn');
  const out: LoraTag = { name, te, unet, tag };
  if (dynText !== undefined) {
    const t = dynText.trim();
    if (!/^[+-]?\d(_?\d)*$/.test(t)) {
      throw new RedlineError('prompt_bad_lora', `${tag}: dyn "${dynText}" is not an integer.`,
        'Write <lora:name:te:unet:dyn> with an integer rank, or leave dyn out.');
    }
    out.dyn = Number(t.replace(/_/g, ''));
  }
  return out;
}

/**
 * Removes A1111 extra-network tags (`<kind:arg:arg...>`) from a prompt and returns the
 * LoRA ones parsed as A1111's Lora extension reads them: <lora:name> (1.0),
 * <lora:name:w> (te = unet = w), <lora:name:te:unet[:dyn]>, named te=/unet=/dyn=.
 */
export function extractExtraNetworks(prompt: string): ExtractedNetworks {
  const loras: LoraTag[] = [];
  const others: ExtraNetworkTag[] = [];
  const cleaned = prompt.replace(EXTRA_NETWORK_TAG, (tag: string, kind: string, args: string) => {
    const items = args.split(':');
    if (LORA_KINDS.has(kind)) loras.push(parseLora(items, tag));
    else others.push({ kind, items, tag });
    return '';
  });
  return { prompt: cleaned, loras, others };
}

/** One part of an A1111 composable prompt ("a AND b:0.5") and its CFG weight. */
export interface SubPrompt {
  text: string;
  weight: number;
}

// \bAND\b with Python's Unicode \b.
const AND_SPLIT = new RegExp(`(?<![${PY_WORD}])AND(?![${PY_WORD}])`, 'u');
// ^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$ with Python's \s and \d.
const SUBPROMPT_WEIGHT = new RegExp(
  `^([^]*?)(?:[${PY_WS}]*:[${PY_WS}]*([-+]?(?:\\p{Nd}+\\.?|\\p{Nd}*\\.\\p{Nd}+)))?[${PY_WS}]*$`, 'u');

/**
 * A1111's get_multicond_prompt_list for one prompt: split at the word AND, and read a
 * trailing ":number" of each part as its weight (1.0 without). This applies to every
 * prompt, AND or not: "a cat:1.2" is the text "a cat" with weight 1.2. The sampler
 * combines the parts as uncond + sum(weight_i * cfg * (cond_i - uncond)).
 */
export function parseSubPrompts(prompt: string): SubPrompt[] {
  return prompt.split(AND_SPLIT).map((part) => {
    const m = SUBPROMPT_WEIGHT.exec(part)!;
    const weightText = m[2];
    if (weightText === undefined) return { text: m[1]!, weight: 1.0 };
    return { text: m[1]!, weight: pythonFloat(weightText)! };
  });
}
