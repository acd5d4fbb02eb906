// CLIP BPE tokenizer for SD 1.5, matching transformers' CLIPTokenizer (tokenizers backend):
// special tokens split out of the raw text, then per segment NFC -> whitespace runs to one
// space -> lowercase, the CLIP split regex, byte-level mapping, BPE with a '</w>' suffix on
// the last symbol of each word, BOS/EOS around the content.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { RedlineError } from '../errors.ts';

export const BOS_ID = 49406;
export const EOS_ID = 49407;
export const PAD_ID = 49407;
/** Positions of the SD 1.5 text encoder: BOS + 75 content tokens + EOS. */
export const CONTEXT_LENGTH = 77;

const BOS_TOKEN = '<|startoftext|>';
const EOS_TOKEN = '<|endoftext|>';
export const END_OF_WORD = '</w>';

// Oniguruma's \s (used by the tokenizers crate) is Unicode White_Space; JavaScript's \s
// differs (it has U+FEFF, lacks U+0085), so the set is spelled out.
const WS = '\\t-\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const WHITESPACE_RUN = new RegExp(`[${WS}]+`, 'gu');
/** CLIP's pre-tokenizer split (words, single digits, runs of other symbols). */
export const CLIP_SPLIT = new RegExp(`'s|'t|'re|'ve|'m|'ll|'d|\\p{L}+|\\p{N}|[^${WS}\\p{L}\\p{N}]+`, 'gu');
// Special tokens are split out of the raw text before normalization, each side tokenized on
// its own (golden cases '<|startoftext|>a cat<|endoftext|>', 'a<|endoftext|>b'). Matching is
// case-sensitive, as for transformers' special tokens (normalized=false); the golden set
// has no upper-case spelling to confirm that.
export const SPECIAL_TOKENS = /<\|startoftext\|>|<\|endoftext\|>/g;
const CAPITAL_SIGMA = '\u03a3';

/** GPT-2's reversible byte -> printable character map. */
export function byteToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const table = new Array<string>(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = printable.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + extra++);
  }
  return table;
}
const BYTE_CHARS = byteToUnicode();

/**
 * The tokenizers crate lowercases character by character (Rust char::to_lowercase), so a
 * final capital sigma becomes 'σ', not the 'ς' that String#toLowerCase gives in context.
 */
function lowercaseCharwise(text: string): string {
  if (!text.includes(CAPITAL_SIGMA)) return text.toLowerCase();
  let out = '';
  for (const ch of text) out += ch === CAPITAL_SIGMA ? '\u03c3' : ch.toLowerCase();
  return out;
}

export function normalizeText(text: string): string {
  return lowercaseCharwise(text.normalize('NFC').replace(WHITESPACE_RUN, ' '));
}

const utf8 = new TextEncoder();
const CACHE_LIMIT = 50_000;

export class ClipTokenizer {
  readonly vocab: ReadonlyMap<string, number>;
  private readonly idToToken: string[];
  private readonly mergeRanks = new Map<string, number>();
  private readonly cache = new Map<string, number[]>();

  /** `merges` are the merge lines in rank order ("a b"), without the '#version' header. */
  constructor(vocab: ReadonlyMap<string, number>, merges: readonly string[]) {
    this.vocab = vocab;
    this.idToToken = [];
    for (const [tok, id] of vocab) this.idToToken[id] = tok;
    for (const special of [BOS_TOKEN, EOS_TOKEN]) {
      if (!vocab.has(special)) {
        throw new RedlineError('tokenizer_invalid', `vocab.json lacks the special token ${special}.`,
          'Use the vocab.json of an SD 1.5 (CLIP ViT-L/14) tokenizer.');
      }
    }
    if (vocab.get(BOS_TOKEN) !== BOS_ID || vocab.get(EOS_TOKEN) !== EOS_ID) {
      throw new RedlineError('tokenizer_invalid',
        `vocab.json maps ${BOS_TOKEN}/${EOS_TOKEN} to ${vocab.get(BOS_TOKEN)}/${vocab.get(EOS_TOKEN)}, not ${BOS_ID}/${EOS_ID}.`,
        'Use the vocab.json of an SD 1.5 (CLIP ViT-L/14) tokenizer.');
    }
    for (let rank = 0; rank < merges.length; rank++) {
      const line = merges[rank]!;
      const space = line.indexOf(' ');
      if (space <= 0 || space === line.length - 1 || line.indexOf(' ', space + 1) !== -1) {
        throw new RedlineError('tokenizer_invalid', `merges.txt line ${rank + 2} is not "left right": ${JSON.stringify(line)}.`,
          'Use the merges.txt of an SD 1.5 (CLIP ViT-L/14) tokenizer.');
      }
      const key = line;
      // A repeated pair keeps its first (best) rank, as the reference implementations do.
      if (!this.mergeRanks.has(key)) this.mergeRanks.set(key, rank);
    }
  }

  /** Token ids of `text` without BOS/EOS, untruncated. */
  tokenize(text: string): number[] {
    const ids: number[] = [];
    let last = 0;
    for (const m of text.matchAll(SPECIAL_TOKENS)) {
      this.encodeSegment(text.slice(last, m.index), ids);
      ids.push(m[0] === BOS_TOKEN ? BOS_ID : EOS_ID);
      last = m.index + m[0].length;
    }
    this.encodeSegment(last === 0 ? text : text.slice(last), ids);
    return ids;
  }

  /** BOS + all tokens + EOS (transformers' `tok(text)['input_ids']` without truncation). */
  encodeUntruncated(text: string): number[] {
    return [BOS_ID, ...this.tokenize(text), EOS_ID];
  }

  /** BOS + first `length-2` tokens + EOS, padded with EOS to `length` (the model input). */
  encodePadded(text: string, length = CONTEXT_LENGTH): number[] {
    const content = this.tokenize(text).slice(0, length - 2);
    const ids = [BOS_ID, ...content, EOS_ID];
    while (ids.length < length) ids.push(PAD_ID);
    return ids;
  }

  tokenString(id: number): string {
    const tok = this.idToToken[id];
    if (tok === undefined) throw new RedlineError('tokenizer_unknown_id', `Token id ${id} is not in the vocabulary.`);
    return tok;
  }

  /** Id of a vocabulary entry such as ',</w>', or undefined. */
  tokenId(token: string): number | undefined {
    return this.vocab.get(token);
  }

  private encodeSegment(segment: string, out: number[]): void {
    if (segment.length === 0) return;
    const normalized = normalizeText(segment);
    for (const m of normalized.matchAll(CLIP_SPLIT)) {
      const word = m[0];
      let ids = this.cache.get(word);
      if (ids === undefined) {
        ids = this.bpe(word);
        if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
        this.cache.set(word, ids);
      }
      for (let i = 0; i < ids.length; i++) out.push(ids[i]!);
    }
  }

  private bpe(word: string): number[] {
    const bytes = utf8.encode(word);
    let symbols: string[] = new Array<string>(bytes.length);
    for (let i = 0; i < bytes.length; i++) symbols[i] = BYTE_CHARS[bytes[i]!]!;
    symbols[symbols.length - 1] += END_OF_WORD;

    // Merging the lowest-ranked pair everywhere, left to right, equals the crate's
    // priority queue: a pair that contains a merged symbol always ranks after that merge.
    while (symbols.length > 1) {
      let bestRank = Infinity;
      let bestLeft = '';
      let bestRight = '';
      for (let i = 0; i < symbols.length - 1; i++) {
        const rank = this.mergeRanks.get(symbols[i] + ' ' + symbols[i + 1]);
        if (rank !== undefined && rank < bestRank) {
          bestRank = rank;
          bestLeft = symbols[i]!;
          bestRight = symbols[i + 1]!;
        }
      }
      if (bestRank === Infinity) break;
      const merged: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (i < symbols.length - 1 && symbols[i] === bestLeft && symbols[i + 1] === bestRight) {
          merged.push(bestLeft + bestRight);
          i++;
        } else {
          merged.push(symbols[i]!);
        }
      }
      symbols = merged;
    }

    const ids = new Array<number>(symbols.length);
    for (let i = 0; i < symbols.length; i++) {
      const id = this.vocab.get(symbols[i]!);
      if (id === undefined) {
        throw new RedlineError('tokenizer_invalid',
          `BPE produced ${JSON.stringify(symbols[i])}, which vocab.json lacks: vocab.json and merges.txt do not belong together.`,
          'Use vocab.json and merges.txt from the same SD 1.5 tokenizer folder.');
      }
      ids[i] = id;
    }
    return ids;
  }
}

export const TOKENIZER_FILES = ['vocab.json', 'merges.txt'] as const;

function missingFiles(dir: string): string[] {
  return TOKENIZER_FILES.filter((f) => !existsSync(join(dir, f)));
}

/** Reads vocab.json + merges.txt from `dir`. */
export function loadTokenizer(dir: string): ClipTokenizer {
  const missing = missingFiles(dir);
  if (missing.length > 0) {
    throw new RedlineError('tokenizer_missing', `Tokenizer folder ${dir} lacks ${missing.join(' and ')}.`,
      'Point --tokenizer at a folder with the SD 1.5 tokenizer files vocab.json and merges.txt (a diffusers model\'s tokenizer/ folder).');
  }
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(join(dir, 'vocab.json'), 'utf8'));
  } catch (err) {
    throw new RedlineError('tokenizer_invalid', `${join(dir, 'vocab.json')} is not valid JSON (${(err as Error).message}).`,
      'Replace it with the vocab.json of an SD 1.5 tokenizer.');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new RedlineError('tokenizer_invalid', `${join(dir, 'vocab.json')} is not a JSON object of token -> id.`,
      'Replace it with the vocab.json of an SD 1.5 tokenizer.');
  }
  const vocab = new Map<string, number>();
  const entries = raw as Record<string, unknown>;
  for (const tok in entries) {
    const id = entries[tok];
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
      throw new RedlineError('tokenizer_invalid', `${join(dir, 'vocab.json')} maps ${JSON.stringify(tok)} to ${JSON.stringify(id)}, not a token id.`,
        'Replace it with the vocab.json of an SD 1.5 tokenizer.');
    }
    vocab.set(tok, id);
  }
  const lines = readFileSync(join(dir, 'merges.txt'), 'utf8').split(/\r?\n/);
  if (lines[0]?.startsWith('#version')) lines.shift();
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return new ClipTokenizer(vocab, lines);
}

export interface TokenizerLocation {
  /** --tokenizer DIR given by the user. */
  explicit?: string;
  /** The model: a diffusers folder, a file inside one, or a single-file checkpoint. */
  modelPath?: string;
  /** A configured folder holding an SD 1.5 tokenizer (vocab.json + merges.txt). */
  cacheDir?: string;
}

/**
 * Where the tokenizer for a model lives: the explicit folder if given (and only it), else a
 * diffusers folder's tokenizer/ (for a file inside a diffusers folder too), else the
 * configured cache folder. Throws naming every place looked at and what each lacked.
 */
export function resolveTokenizerDir(where: TokenizerLocation): string {
  if (where.explicit !== undefined) {
    const dir = resolve(where.explicit);
    if (!existsSync(dir) || !statSync(dir).isDirectory()) {
      throw new RedlineError('tokenizer_missing', `--tokenizer ${where.explicit}: no such folder.`,
        'Give a folder that holds vocab.json and merges.txt (a diffusers model\'s tokenizer/ folder).');
    }
    const missing = missingFiles(dir);
    if (missing.length > 0) {
      throw new RedlineError('tokenizer_missing', `--tokenizer ${dir} lacks ${missing.join(' and ')}.`,
        'Give a folder that holds vocab.json and merges.txt (a diffusers model\'s tokenizer/ folder).');
    }
    return dir;
  }
  const tried: string[] = [];
  const candidates: string[] = [];
  if (where.modelPath !== undefined) {
    const model = resolve(where.modelPath);
    if (!existsSync(model)) {
      tried.push(`${model} (no such file or folder)`);
    } else if (statSync(model).isDirectory()) {
      candidates.push(join(model, 'tokenizer'));
    } else if (existsSync(join(dirname(dirname(model)), 'model_index.json'))) {
      // A weights file inside a diffusers folder, e.g. unet/diffusion_pytorch_model.safetensors.
      candidates.push(join(dirname(dirname(model)), 'tokenizer'));
    } else {
      tried.push(`${model} (a single-file checkpoint: it carries no tokenizer)`);
    }
  }
  if (where.cacheDir !== undefined) candidates.push(resolve(where.cacheDir));
  for (const dir of candidates) {
    if (!existsSync(dir)) {
      tried.push(`${dir} (no such folder)`);
      continue;
    }
    const missing = missingFiles(dir);
    if (missing.length === 0) return dir;
    tried.push(`${dir} (lacks ${missing.join(' and ')})`);
  }
  if (where.cacheDir === undefined) tried.push('the tokenizer cache (none is configured)');
  throw new RedlineError('tokenizer_missing',
    `No CLIP tokenizer (vocab.json + merges.txt) found. Looked at: ${tried.join('; ')}.`,
    'Pass --tokenizer DIR with a folder holding vocab.json and merges.txt (e.g. the tokenizer/ folder of an SD 1.5 diffusers model), or copy those two files into the configured tokenizer cache folder.');
}
