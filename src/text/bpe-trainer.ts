// Trains a CLIP-format byte-level BPE vocabulary (vocab.json + merges.txt '#version: 0.2',
// '</w>' word ends) on a caption corpus, so a model trained from scratch on the project's
// own captions gets a small vocabulary that src/text/tokenizer.ts loads like SD 1.5's.
// Words are pre-split exactly as the tokenizer splits them (normalizeText + the CLIP split
// rule), so every merge learned here applies at encode time. Ties between equally
// frequent pairs are broken by the pair's text, which makes the result a pure function of
// the corpus and the options.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RedlineError } from '../errors.ts';
import { BOS_ID, byteToUnicode, CLIP_SPLIT, END_OF_WORD, EOS_ID, normalizeText, SPECIAL_TOKENS } from './tokenizer.ts';

// Byte map and word split are the tokenizer's own, so every merge learned here applies at encode time.
const BYTE_CHARS = byteToUnicode();
/** CLIP's base vocabulary order: the printable bytes first, then the remapped ones. */
const BASE_SYMBOLS = [...BYTE_CHARS].sort((a, b) => a.charCodeAt(0) - b.charCodeAt(0));
const utf8 = new TextEncoder();

export interface BpeTrainOptions {
  /** Most merges to learn (CLIP ViT-L/14 has 48,894). */
  maxMerges?: number;
  /** A pair must occur at least this often (counted over word occurrences) to be merged. */
  minFrequency?: number;
}

export interface BpeVocabulary {
  /** token -> id: the 512 byte symbols (plain, then with '</w>'), the merges in order, and
   * <|startoftext|> / <|endoftext|> at SD 1.5's ids 49406 / 49407. */
  vocab: Map<string, number>;
  /** Merge rules in rank order ("left right"). */
  merges: string[];
}

/** Words of a caption as the tokenizer sees them, each a list of byte symbols. */
export function wordsOf(text: string): string[][] {
  const words: string[][] = [];
  for (const segment of text.split(SPECIAL_TOKENS)) {
    for (const m of normalizeText(segment).matchAll(CLIP_SPLIT)) {
      const symbols = Array.from(utf8.encode(m[0]), (b) => BYTE_CHARS[b]!);
      symbols[symbols.length - 1] += END_OF_WORD;
      words.push(symbols);
    }
  }
  return words;
}

export function trainBpe(corpus: Iterable<string>, opts: BpeTrainOptions = {}): BpeVocabulary {
  const maxMerges = opts.maxMerges ?? 10_000;
  const minFrequency = opts.minFrequency ?? 2;
  if (!Number.isInteger(maxMerges) || maxMerges < 0) throw new RedlineError('tokenizer_train', `maxMerges must be a whole number >= 0, got ${maxMerges}.`);
  if (!Number.isInteger(minFrequency) || minFrequency < 1) throw new RedlineError('tokenizer_train', `minFrequency must be a whole number >= 1, got ${minFrequency}.`);
  const base = [...BASE_SYMBOLS, ...BASE_SYMBOLS.map((c) => c + END_OF_WORD)];
  if (base.length + maxMerges > BOS_ID) throw new RedlineError('tokenizer_train', `At most ${BOS_ID - base.length} merges fit below the special token ids.`);

  // distinct words with their counts; a word is a symbol list keyed by its joined text
  const counts = new Map<string, { symbols: string[]; count: number }>();
  let lines = 0;
  for (const line of corpus) {
    lines++;
    for (const w of wordsOf(line)) {
      const key = w.join('\u0000');
      const hit = counts.get(key);
      if (hit) hit.count++;
      else counts.set(key, { symbols: w, count: 1 });
    }
  }
  if (lines === 0) throw new RedlineError('tokenizer_train', 'The caption corpus is empty.', 'Give at least one caption.');
  const words = [...counts.values()];

  const merges: string[] = [];
  while (merges.length < maxMerges) {
    const pairs = new Map<string, number>();
    for (const { symbols, count } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        const p = `${symbols[i]} ${symbols[i + 1]}`;
        pairs.set(p, (pairs.get(p) ?? 0) + count);
      }
    }
    let best: string | null = null;
    let bestCount = 0;
    for (const [p, c] of pairs) {
      if (c > bestCount || (c === bestCount && best !== null && p < best)) {
        best = p;
        bestCount = c;
      }
    }
    if (best === null || bestCount < minFrequency) break;
    merges.push(best);
    const [left, right] = best.split(' ') as [string, string];
    const joined = left + right;
    for (const w of words) {
      const s = w.symbols;
      for (let i = 0; i + 1 < s.length; i++) {
        if (s[i] === left && s[i + 1] === right) s.splice(i, 2, joined);
      }
    }
  }

  const vocab = new Map<string, number>();
  for (const tok of base) vocab.set(tok, vocab.size);
  for (const m of merges) {
    const tok = m.replace(' ', '');
    if (!vocab.has(tok)) vocab.set(tok, vocab.size);
  }
  vocab.set('<|startoftext|>', BOS_ID);
  vocab.set('<|endoftext|>', EOS_ID);
  return { vocab, merges };
}

/** Writes vocab.json and merges.txt (the files loadTokenizer reads) into `dir`. */
export function writeBpeVocabulary(dir: string, v: BpeVocabulary): void {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'vocab.json'), JSON.stringify(Object.fromEntries(v.vocab)));
  writeFileSync(join(dir, 'merges.txt'), ['#version: 0.2', ...v.merges].join('\n') + '\n');
}
