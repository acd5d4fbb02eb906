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
  const starts: number[] = [];
  const ends: number[] = [];
  let text = '';
  let i = 0;
  while (i < original.length) {
    const cp = original.codePointAt(i)!;
    const width = cp > 0xffff ? 2 : 1;
    const ch = width === 2 ? original.slice(i, i + 2) : original[i]!;
    let folded: string;
    if (cp < 0x80) {
      folded = cp >= 65 && cp <= 90 ? String.fromCharCode(cp + 32) : ch;
    } else {
      folded = foldChar(ch);
    }
    for (let k = 0; k < folded.length; k++) {
      starts.push(i);
      ends.push(i + width);
    }
    text += folded;
    i += width;
  }
  return { text, origStart: Int32Array.from(starts), origEnd: Int32Array.from(ends) };
}

// Leetspeak digits and symbols as the letters they stand for. '1' and '|' become 'i';
// `squeeze` folds 'l' onto 'i' so "b1ood" and "k1ll" both match.
const LEET: Record<string, string> = {
  '0': 'o', '1': 'i', '2': 'z', '3': 'e', '4': 'a', '5': 's', '6': 'g', '7': 't', '8': 'b', '9': 'g',
  '@': 'a', '$': 's', '!': 'i', '|': 'i', '+': 't', '€': 'e', '£': 'l', '¡': 'i',
};

/** Characters that can be part of a token: letters, digits and leet symbols. */
const TOKEN_CHAR = /[\p{L}\p{N}@$!|+€£¡]/u;
const LETTER = /\p{L}/u;

export function isLeetChar(ch: string): boolean {
  return ch in LEET;
}

/** Replaces leet characters in a token that also contains letters; other tokens unchanged. */
export function deLeet(token: string): string {
  if (!LETTER.test(token)) return token;
  let out = '';
  for (const ch of token) out += LEET[ch] ?? ch;
  return out;
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
  /** For a token like "13yo" or "1girl": the letters after the leading number. */
  suffix?: Token;
  /** True for tokens built by re-joining spaced-out letters ("n u d e"). */
  joined?: boolean;
}

/**
 * Collapses runs of the same letter and folds 'l' onto 'i' (leet '1' and '|' become 'i',
 * and confusable 'I'/'l'), returning the key and run lengths. Two words match when their
 * keys are equal and every run of the typed word is at least as long as the lexicon word's
 * run: "nuuude" matches "nude", "teeen" matches "teen", but "ten" does not match "teen".
 */
export function squeeze(text: string): { key: string; runs: Uint8Array } {
  let key = '';
  const runs: number[] = [];
  let prev = '';
  for (const raw of text) {
    const ch = raw === 'l' ? 'i' : raw;
    if (ch === prev) {
      runs[runs.length - 1]!++;
    } else {
      key += ch;
      runs.push(1);
      prev = ch;
    }
  }
  return { key, runs: Uint8Array.from(runs, (r) => Math.min(r, 255)) };
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
    let raw = text.slice(i, j);
    let s = i;
    // Symbols at the edges are punctuation ("kill!"), not leet, except '@' and '$'.
    const trimmed = raw.replace(EDGE_SYMBOLS, '');
    if (trimmed.length === 0) {
      i = j;
      continue;
    }
    if (trimmed !== raw) {
      s = i + raw.indexOf(trimmed);
      raw = trimmed;
    }
    const e = s + raw.length;
    const start = origStart[s]!;
    const end = origEnd[e - 1]!;
    if (NUMERIC.test(raw)) {
      const tok = makeToken(raw, start, end);
      tok.num = Number(raw);
      tokens.push(tok);
    } else {
      const tok = makeToken(deLeet(raw), start, end);
      const lead = LEADING_NUMBER.exec(raw);
      if (lead) {
        // "13yo", "1girl", "8k": keep the number and the word as an alternative reading.
        tok.num = Number(lead[1]);
        const sufStart = origStart[s + lead[1]!.length]!;
        tok.suffix = makeToken(lead[2]!, sufStart, end);
      }
      tokens.push(tok);
    }
    i = j;
  }
  return tokens;
}

/**
 * Re-joins letters typed with separators between them ("n u d e", "n.u.d.e", "n_u_d_e"):
 * each maximal run of three or more one-character tokens gives one joined token. The
 * original single letters stay in the list; joined tokens are returned separately and
 * matched by substring (spaced-out text has lost its word boundaries).
 */
export function joinSpacedLetters(tokens: Token[]): { token: Token; letters: Token[] }[] {
  const out: { token: Token; letters: Token[] }[] = [];
  let i = 0;
  while (i < tokens.length) {
    if (tokens[i]!.text.length !== 1) {
      i++;
      continue;
    }
    let j = i;
    while (j < tokens.length && tokens[j]!.text.length === 1) j++;
    if (j - i >= 3) {
      const letters = tokens.slice(i, j);
      const text = letters.map((t) => t.text).join('');
      const tok = makeToken(text, letters[0]!.start, letters[letters.length - 1]!.end);
      tok.joined = true;
      out.push({ token: tok, letters });
    }
    i = j;
  }
  return out;
}

/** The full normalised form of a string, for display and tests: tokens joined by spaces. */
export function normalizeForMatching(s: string): string {
  return tokenize(foldText(s)).map((t) => t.text).join(' ');
}
