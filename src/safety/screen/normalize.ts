// Text normalisation for screening. Every step keeps a map back to the original string so
// evidence spans point at what the user actually typed. Steps, in order, per code point:
//   1. drop format characters (Unicode Cf: zero-width joiners, bidi controls, soft hyphen)
//      and other default-ignorables (variation selectors, Hangul fillers, combining grapheme joiner)
//   2. Unicode NFKC (fullwidth, mathematical alphanumerics, circled letters, ligatures)
//   3. strip diacritics (NFD, drop combining marks: "nüde", zalgo overlays)
//   4. confusables skeleton (Cyrillic/Greek/Armenian/Cherokee/small-capital look-alikes)
//   5. case folding
// then per token: leetspeak (only in tokens that also hold letters, so "13 year old" and
// "1488" keep their digits), separator handling (spaced-out letters are re-joined), and a
// repeated-letter key (runs collapsed; see `squeeze`).
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';

interface ConfusablesData {
  ranges: { from: number; to: number; start: string }[];
  chars: Record<string, string>;
}

const confusablesData = parseYaml(
  readFileSync(new URL('./data/confusables.yaml', import.meta.url), 'utf8'),
) as ConfusablesData;

const CONFUSABLES = new Map<number, string>();
for (const [from, to] of Object.entries(confusablesData.chars)) {
  CONFUSABLES.set(from.codePointAt(0)!, String(to));
}
for (const r of confusablesData.ranges) {
  const base = r.start.charCodeAt(0);
  for (let cp = r.from; cp <= r.to; cp++) CONFUSABLES.set(cp, String.fromCharCode(base + cp - r.from));
}

/** The confusables skeleton of one character (after NFKC), or the character itself. */
export function skeletonChar(ch: string): string {
  return CONFUSABLES.get(ch.codePointAt(0)!) ?? ch;
}

const FORMAT_OR_IGNORABLE = /^[\p{Cf}\u034F\u115F\u1160\u17B4\u17B5\u180B-\u180F\u3164\uFE00-\uFE0F\uFFA0\u{E0100}-\u{E01EF}]$/u;
const COMBINING_MARK = /\p{M}/gu;

/** Whether a character is removed outright (zero-width, bidi and other format characters). */
export function isIgnorable(ch: string): boolean {
  return FORMAT_OR_IGNORABLE.test(ch);
}

export function nfkc(s: string): string {
  return s.normalize('NFKC');
}

export function stripDiacritics(s: string): string {
  return s.normalize('NFD').replace(COMBINING_MARK, '');
}

export function caseFold(s: string): string {
  // toLowerCase covers simple folding; the full-folding cases that matter for Latin text
  // (ß, ẞ, ſ) are in the confusables table or here.
  return s.toLowerCase().replace(/ſ/g, 's');
}

export function skeleton(s: string): string {
  let out = '';
  for (const ch of s) out += skeletonChar(ch);
  return out;
}

const charCache = new Map<string, string>();

/** Steps 1-5 for one code point; cached because prompts reuse a small alphabet. */
export function foldChar(ch: string): string {
  let folded = charCache.get(ch);
  if (folded !== undefined) return folded;
  if (isIgnorable(ch)) {
    folded = '';
  } else {
    let s = '';
    for (const c of stripDiacritics(nfkc(ch))) {
      // NFKC can itself produce ignorables (e.g. U+FEFF variants); drop them too.
      if (!isIgnorable(c)) s += skeletonChar(c);
    }
    folded = caseFold(s);
  }
  if (charCache.size < 50_000) charCache.set(ch, folded);
  return folded;
}

export interface FoldedText {
  /** Folded text: one UTF-16 unit per entry of `origStart`/`origEnd`. */
  text: string;
  /** Original UTF-16 offset where the character that produced text[i] starts. */
  origStart: Int32Array;
  /** Original UTF-16 offset just after that character. */
  origEnd: Int32Array;
}

/** Characters-level steps over a whole string, with the map back to the original. */
export function foldText(original: string): FoldedText {
  const n = original.length;
  // Plain ASCII (most prompts): lower-casing is the only change, offsets are the identity.
  let ascii = true;
  for (let i = 0; i < n; i++) {
    if (original.charCodeAt(i) >= 0x80) {
      ascii = false;
      break;
    }
  }
  if (ascii) {
    const origStart = new Int32Array(n);
    const origEnd = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      origStart[i] = i;
      origEnd[i] = i + 1;
    }
    return { text: original.toLowerCase(), origStart, origEnd };
  }
  let starts = new Int32Array(n + 8);
  let ends = new Int32Array(n + 8);
  let len = 0;
  let text = '';
  let i = 0;
  while (i < n) {
    const cp = original.codePointAt(i)!;
    const width = cp > 0xffff ? 2 : 1;
    let folded: string;
    if (cp < 0x80) {
      folded = cp >= 65 && cp <= 90 ? String.fromCharCode(cp + 32) : original[i]!;
    } else {
      folded = foldChar(width === 2 ? original.slice(i, i + 2) : original[i]!);
    }
    if (len + folded.length > starts.length) {
      const grow = (a: Int32Array) => {
        const b = new Int32Array(a.length * 2 + folded.length);
        b.set(a);
        return b;
      };
      starts = grow(starts);
      ends = grow(ends);
    }
    for (let k = 0; k < folded.length; k++) {
      starts[len] = i;
      ends[len] = i + width;
      len++;
    }
    text += folded;
    i += width;
  }
  return { text, origStart: starts.subarray(0, len), origEnd: ends.subarray(0, len) };
}

// Leetspeak digits and symbols as the letters they stand for. '1' and '|' can be 'i' or 'l'
// ("k1ll", "b1ood"): tokens holding them get every reading (see `leetReadings`).
const LEET: Record<string, string> = {
  '0': 'o', '2': 'z', '3': 'e', '4': 'a', '5': 's', '6': 'g', '7': 't', '8': 'b', '9': 'g',
  '@': 'a', '$': 's', '!': 'i', '+': 't', '€': 'e', '£': 'l', '¡': 'i',
};
const AMBIGUOUS_LEET = new Set(['1', '|']);

/** Characters that can be part of a token: letters, digits and leet symbols. */
const TOKEN_CHAR = /[\p{L}\p{N}@$!|+€£¡]/u;
const LETTER = /\p{L}/u;

export function isLeetChar(ch: string): boolean {
  return ch in LEET || AMBIGUOUS_LEET.has(ch);
}

/**
 * Every leetspeak reading of a token: deterministic characters mapped, and each '1' or '|'
 * read as 'i' or 'l' (all combinations up to three of them, else all-i and all-l).
 * The first reading reads them all as 'i'.
 */
export function leetReadings(token: string): string[] {
  let base = '';
  const amb: number[] = [];
  for (const ch of token) {
    if (AMBIGUOUS_LEET.has(ch)) {
      amb.push(base.length);
      base += 'i';
    } else {
      base += LEET[ch] ?? ch;
    }
  }
  if (amb.length === 0) return [base];
  if (amb.length > 3) return [base, base.replace(/i/g, (m, at: number) => (amb.includes(at) ? 'l' : m))];
  const out: string[] = [];
  for (let mask = 0; mask < 1 << amb.length; mask++) {
    const chars = [...base];
    amb.forEach((at, k) => {
      if (mask & (1 << k)) chars[at] = 'l';
    });
    out.push(chars.join(''));
  }
  return out;
}

/** Reads every leet character as a letter ('1' and '|' as 'i'). */
export function leetAll(token: string): string {
  return leetReadings(token)[0]!;
}

/** Replaces leet characters in a token that also contains letters; other tokens unchanged. */
export function deLeet(token: string): string {
  return LETTER.test(token) ? leetAll(token) : token;
}

export interface Token {
  /** Normalised token text (folded, de-leeted). */
  text: string;
  /** Repeated-letter key: runs collapsed, 'l' folded onto 'i'. */
  key: string;
  /** Run lengths of `key`'s characters in `text`. */
  runs: Uint8Array;
  /** Span in the original string. */
  start: number;
  end: number;
  /** Numeric value when the token is a number ("13"; also the digits of "13yo"). */
  num?: number;
  /**
   * Other readings of the same characters: the letters after a leading number ("13yo" ->
   * "yo", "1girl" -> "girl"), other leetspeak readings ("b1ood" -> "blood"), an all-digit
   * token read as leetspeak ("1515" -> "isis"), the token with edge '!' read as a letter.
   */
  alts?: Token[];
  /** For tokens re-joined from spaced-out letters ("n u d e"): the letters. */
  letters?: Token[];
  /** Re-joined letters with no visible word boundaries: searched by substring. */
  unsegmented?: boolean;
}

/**
 * Collapses runs of the same letter, returning the key and run lengths. Two words match when their
 * keys are equal and every run of the typed word is at least as long as the lexicon word's
 * run: "nuuude" matches "nude", "teeen" matches "teen", but "ten" does not match "teen".
 */
export function squeeze(text: string): { key: string; runs: Uint8Array } {
  const n = text.length;
  const runs = new Uint8Array(n);
  let key = '';
  let k = -1;
  let prev = -1;
  let changed = false;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === prev) {
      if (runs[k]! < 255) runs[k]!++;
      if (!changed) {
        key = text.slice(0, i);
        changed = true;
      }
    } else {
      k++;
      runs[k] = 1;
      prev = c;
      if (changed) key += text[i];
    }
  }
  if (!changed) key = text;
  return { key, runs: runs.subarray(0, k + 1) };
}

/** Whether `typed` (a token) spells `term` with letters possibly repeated more often. */
export function runsCover(typed: Uint8Array, term: Uint8Array, termLength = term.length): boolean {
  for (let i = 0; i < termLength; i++) if (typed[i]! < term[i]!) return false;
  return true;
}

function makeToken(text: string, start: number, end: number): Token {
  const { key, runs } = squeeze(text);
  return { text, key, runs, start, end };
}

const NUMERIC = /^\d+$/;
const LEADING_NUMBER = /^(\d+)([\p{L}]+)$/u;
const EDGE_SYMBOLS = /^[!|+]+|[!|+]+$/g;

function isPlainWord(w: string): boolean {
  for (let k = 0; k < w.length; k++) {
    const c = w.charCodeAt(k);
    if (c < 97 || c > 122) return false;
  }
  return true;
}

function isTokenCharAt(text: string, i: number): boolean {
  const c = text.charCodeAt(i);
  if (c < 0x80) {
    return (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 64 || c === 36 || c === 33 || c === 124 || c === 43;
  }
  // A low surrogate belongs to the character its high surrogate started.
  if (c >= 0xdc00 && c <= 0xdfff) return i > 0 && isTokenCharAt(text, i - 1);
  return TOKEN_CHAR.test(String.fromCodePoint(text.codePointAt(i)!));
}

/** Splits folded text into tokens, applying the token-level steps. */
export function tokenize(folded: FoldedText): Token[] {
  const { text, origStart, origEnd } = folded;
  const tokens: Token[] = [];
  let i = 0;
  const n = text.length;
  while (i < n) {
    if (!isTokenCharAt(text, i)) {
      i++;
      continue;
    }
    let j = i + 1;
    while (j < n && isTokenCharAt(text, j)) j++;
    const whole = text.slice(i, j);
    if (isPlainWord(whole)) {
      tokens.push(makeToken(whole, origStart[i]!, origEnd[j - 1]!));
      i = j;
      continue;
    }
    // Symbols at the edges are usually punctuation ("kill!"): the main reading drops them,
    // another reading keeps them as letters ("h3nt4!").
    const trimmed = whole.replace(EDGE_SYMBOLS, '');
    if (trimmed.length === 0) {
      i = j;
      continue;
    }
    const s = i + whole.indexOf(trimmed);
    const e = s + trimmed.length;
    const start = origStart[s]!;
    const end = origEnd[e - 1]!;
    let tok: Token;
    const readings: string[] = [];
    if (NUMERIC.test(trimmed)) {
      tok = makeToken(trimmed, start, end);
      tok.num = Number(trimmed);
      if (trimmed.length >= 3) readings.push(...leetReadings(trimmed));
    } else {
      // Letters mixed with leet characters, or leet characters alone ("151$" for "isis").
      const main = LETTER.test(trimmed) || trimmed.length >= 3 ? leetReadings(trimmed) : [trimmed];
      tok = makeToken(main[0]!, start, end);
      readings.push(...main.slice(1));
      const lead = LEADING_NUMBER.exec(trimmed);
      if (lead) {
        // "13yo", "1girl", "8k": keep the number and the word as another reading.
        tok.num = Number(lead[1]);
        const sufStart = origStart[s + lead[1]!.length]!;
        (tok.alts ??= []).push(makeToken(lead[2]!, sufStart, end));
      }
    }
    if (whole !== trimmed && (LETTER.test(whole) || whole.length >= 3)) readings.push(...leetReadings(whole));
    for (const r of new Set(readings)) {
      if (r !== tok.text) (tok.alts ??= []).push(makeToken(r, origStart[i]!, origEnd[j - 1]!));
    }
    tokens.push(tok);
    i = j;
  }
  return tokens;
}

/**
 * Re-joins letters typed with separators between them ("n u d e", "n.u.d.e", "n_u_d_e").
 * In a run of three or more one-character tokens, the most frequent gap is the separator
 * inside words and any other gap ("   ", ", ") is a word boundary, so "g.i.r.l   a.g.e.d"
 * becomes "girl aged". A run whose gaps are all alike has no visible word boundaries: it
 * becomes one token marked `unsegmented`, searched by substring (see lexicon.ts).
 */
export function mergeSpacedLetters(tokens: Token[], original: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < tokens.length) {
    if (tokens[i]!.text.length !== 1) {
      out.push(tokens[i]!);
      i++;
      continue;
    }
    let j = i + 1;
    while (j < tokens.length && tokens[j]!.text.length === 1 && tokens[j]!.start - tokens[j - 1]!.end <= 4) j++;
    if (j - i < 3) {
      for (let k = i; k < j; k++) out.push(tokens[k]!);
      i = j;
      continue;
    }
    const run = tokens.slice(i, j);
    const gaps = run.slice(1).map((t, k) => original.slice(run[k]!.end, t.start));
    const counts = new Map<string, number>();
    for (const g of gaps) counts.set(g, (counts.get(g) ?? 0) + 1);
    const intra = [...counts].sort((a, b) => b[1] - a[1])[0]![0];
    const uniform = counts.size === 1;
    let segStart = 0;
    for (let k = 1; k <= run.length; k++) {
      if (k < run.length && gaps[k - 1] === intra) continue;
      const seg = run.slice(segStart, k);
      if (seg.length === 1) {
        out.push(seg[0]!);
      } else {
        const raw = seg.map((t) => t.text).join('');
        const readings = leetReadings(raw);
        const tok = makeToken(readings[0]!, seg[0]!.start, seg[seg.length - 1]!.end);
        if (readings.length > 1) tok.alts = readings.slice(1).map((r) => makeToken(r, tok.start, tok.end));
        tok.letters = seg;
        tok.unsegmented = uniform;
        out.push(tok);
      }
      segStart = k;
    }
    i = j;
  }
  return out;
}

/** The full normalised form of a string, for display and tests: tokens joined by spaces. */
export function normalizeForMatching(s: string): string {
  return mergeSpacedLetters(tokenize(foldText(s)), s).map((t) => t.text).join(' ');
}
