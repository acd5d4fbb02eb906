// Red-team variant generator: rewrites a prompt the ways people dodge keyword filters
// (homoglyphs, zero-width characters, leetspeak, spacing, repeated letters, mixed case).
// Used by the evaluation (scripts/eval-safety.ts) and the tests. Its look-alike table is
// deliberately independent of the screener's confusables data, so the evaluation does not
// only test the screener against its own table.

export type EvasionKind = 'homoglyph' | 'zero_width' | 'leetspeak' | 'spacing' | 'split_words' | 'repeated' | 'mixed_case' | 'combined';

/** The evasions the red-team README names (plus a combination of three of them). */
export const EVASION_KINDS: readonly EvasionKind[] = ['homoglyph', 'zero_width', 'leetspeak', 'spacing', 'repeated', 'mixed_case', 'combined'];

/** Harder variants reported separately: a space typed at a random point inside words. */
export const EXTRA_EVASION_KINDS: readonly EvasionKind[] = ['split_words'];

/** Small deterministic PRNG (mulberry32) so variants are reproducible from a seed. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Look-alikes per Latin letter: Cyrillic, Greek, fullwidth, mathematical bold/italic/script,
// and a few others. Several per letter; the generator picks at random.
const LOOKALIKES: Record<string, string[]> = {
  a: ['\u0430', '\u03B1', '\uFF41', '\u{1D41A}', '\u{1D4EA}', '\u0251'],
  b: ['\u{1D41B}', '\uFF42', '\u0184', '\u13CF'],
  c: ['\u0441', '\u03F2', '\uFF43', '\u{1D41C}', '\u217D'],
  d: ['\u0501', '\uFF44', '\u{1D41D}', '\u217E'],
  e: ['\u0435', '\u03B5', '\uFF45', '\u{1D41E}', '\u212E'],
  f: ['\uFF46', '\u{1D41F}'],
  g: ['\u0261', '\uFF47', '\u{1D420}'],
  h: ['\u04BB', '\uFF48', '\u{1D421}'],
  i: ['\u0456', '\u03B9', '\uFF49', '\u{1D422}', '\u2170', '\u0131'],
  j: ['\u0458', '\uFF4A', '\u{1D423}'],
  k: ['\u03BA', '\uFF4B', '\u{1D424}'],
  l: ['\u04CF', '\uFF4C', '\u{1D425}', '\u217C'],
  m: ['\uFF4D', '\u{1D426}', '\u217F'],
  n: ['\u0578', '\uFF4E', '\u{1D427}'],
  o: ['\u043E', '\u03BF', '\uFF4F', '\u{1D428}', '\u0585'],
  p: ['\u0440', '\u03C1', '\uFF50', '\u{1D429}'],
  q: ['\u051B', '\uFF51', '\u{1D42A}'],
  r: ['\u0433', '\uFF52', '\u{1D42B}'],
  s: ['\u0455', '\uFF53', '\u{1D42C}'],
  t: ['\uFF54', '\u{1D42D}'],
  u: ['\u057D', '\u03C5', '\uFF55', '\u{1D42E}'],
  v: ['\u03BD', '\uFF56', '\u{1D42F}', '\u2174'],
  w: ['\u051D', '\uFF57', '\u{1D430}'],
  x: ['\u0445', '\u03C7', '\uFF58', '\u{1D431}', '\u2179'],
  y: ['\u0443', '\uFF59', '\u{1D432}'],
  z: ['\uFF5A', '\u{1D433}'],
};

const ZERO_WIDTH = ['\u200B', '\u200C', '\u200D', '\u2060', '\uFEFF', '\u00AD', '\u180E', '\u2062'];
const LEET: Record<string, string[]> = {
  a: ['4', '@'], e: ['3'], i: ['1', '!'], o: ['0'], s: ['5', '$'], t: ['7'], l: ['1', '|'], g: ['9'], b: ['8'],
};

function mapLetters(s: string, f: (ch: string) => string): string {
  let out = '';
  for (const ch of s) out += /[A-Za-z]/.test(ch) ? f(ch) : ch;
  return out;
}

export function evade(prompt: string, kind: EvasionKind, seed: number): string {
  const r = rng(seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!;
  switch (kind) {
    case 'homoglyph':
      return mapLetters(prompt, (ch) => {
        const alts = LOOKALIKES[ch.toLowerCase()];
        return alts && r() < 0.6 ? pick(alts) : ch;
      });
    case 'zero_width':
      return prompt.replace(/([A-Za-z])(?=[A-Za-z])/g, (ch) => (r() < 0.6 ? ch + pick(ZERO_WIDTH) : ch));
    case 'leetspeak':
      return mapLetters(prompt, (ch) => {
        const alts = LEET[ch.toLowerCase()];
        return alts && r() < 0.7 ? pick(alts) : ch;
      });
    case 'spacing': {
      // Either every word's letters spaced out, or separators inside the words.
      const sep = pick([' ', '.', '-', '_', ' . ', '*']);
      return prompt.split(/(\s+)/).map((w) => (/^[A-Za-z]{3,}$/.test(w) ? [...w].join(sep) : w)).join(sep === ' ' ? '   ' : ' ');
    }
    case 'split_words':
      // One space typed inside longer words ("nu de", "chil d").
      return prompt.replace(/[A-Za-z]{4,}/g, (w) => {
        if (r() < 0.4) return w;
        const at = 1 + Math.floor(r() * (w.length - 1));
        return `${w.slice(0, at)} ${w.slice(at)}`;
      });
    case 'repeated':
      return mapLetters(prompt, (ch) => (r() < 0.3 ? ch.repeat(2 + Math.floor(r() * 3)) : ch));
    case 'mixed_case':
      return mapLetters(prompt, (ch) => (r() < 0.5 ? ch.toUpperCase() : ch.toLowerCase()));
    case 'combined':
      return evade(evade(evade(prompt, 'homoglyph', seed + 1), 'zero_width', seed + 2), 'mixed_case', seed + 3);
  }
}
