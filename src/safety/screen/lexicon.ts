// Compiles the lexicon data (data/lexicon.yaml, data/public-figures.yaml, the operator's
// protected persons) into an index over normalised tokens, and finds matches with their
// spans in the original text.
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { foldText, leetAll, mergeSpacedLetters, runsCover, squeeze, tokenize, type Token } from './normalize.ts';

export type Tag =
  | 'minor' | 'minor_weak' | 'adult' | 'minor_sexual'
  | 'sexual' | 'suggestive' | 'attire' | 'clothing' | 'age_marker'
  | 'sexual_violence' | 'coercion'
  | 'injury' | 'injury_care' | 'threat' | 'intensify' | 'soften'
  | 'person' | 'person_title'
  | 'extremist' | 'extremist_org' | 'propaganda' | 'glorify' | 'atrocity' | 'incite_verb' | 'target_group'
  | 'selfharm_imperative' | 'selfharm' | 'selfharm_ambiguous' | 'promote' | 'prevention'
  | 'benign';

const TAGS = new Set<Tag>([
  'minor', 'minor_weak', 'adult', 'minor_sexual', 'sexual', 'suggestive', 'attire', 'clothing', 'age_marker',
  'sexual_violence', 'coercion', 'injury', 'injury_care', 'threat', 'intensify', 'soften', 'person', 'person_title',
  'extremist', 'extremist_org', 'propaganda', 'glorify', 'atrocity', 'incite_verb', 'target_group',
  'selfharm_imperative', 'selfharm', 'selfharm_ambiguous', 'promote', 'prevention', 'benign',
]);

interface EntryData {
  tag: string;
  level?: number;
  terms: string[];
  near?: string[];
  unlessNear?: string[];
  unlessAfter?: string[];
  window?: number;
}

interface LexiconData {
  groups: Record<string, string[]>;
  entries: EntryData[];
}

interface PeopleData {
  people: { name: string; aliases?: string[] }[];
}

interface PatternWord {
  key: string;
  runs: Uint8Array;
  prefix: boolean;
}

interface Pattern {
  words: PatternWord[];
  term: string;
  entry: CompiledEntry;
  /** For person patterns: the canonical name. */
  person?: string;
}

interface CompiledEntry {
  tag: Tag;
  level: number;
  near?: Set<string>;
  unlessNear?: Set<string>;
  unlessAfter?: Set<string>;
  window: number;
}

export interface Match {
  tag: Tag;
  level: number;
  term: string;
  person?: string;
  /** Token range [from, to) in the token list. */
  from: number;
  to: number;
  /** Span in the original text. */
  start: number;
  end: number;
  /** Found by joining two tokens; such a match never hides the matches inside it. */
  compound?: boolean;
}

export interface Analysis {
  tokens: Token[];
  matches: Match[];
}

const dataDir = new URL('./data/', import.meta.url);

export function loadYaml<T>(file: string): T {
  return parseYaml(readFileSync(new URL(file, dataDir), 'utf8')) as T;
}

/**
 * Expands alternations written in a term: "(knife|arrow) in (his|her) (chest|back)" gives
 * every combination (eight terms here).
 */
export function expandTerm(term: string): string[] {
  const m = /\(([^()]*)\)/.exec(term);
  if (!m) return [term];
  const head = term.slice(0, m.index);
  const tail = term.slice(m.index + m[0].length);
  return m[1]!.split('|').flatMap((alt) => expandTerm(`${head}${alt}${tail}`)).map((t) => t.replace(/\s+/g, ' ').trim());
}

function wordKeys(term: string): PatternWord[] {
  const folded = foldText(term.trim());
  const prefix = folded.text.endsWith('*');
  const toks = tokenize(foldText(prefix ? term.trim().slice(0, -1) : term.trim()));
  return toks.map((t, i) => ({ key: t.key, runs: t.runs, prefix: prefix && i === toks.length - 1 }));
}

export class LexiconIndex {
  private readonly exact = new Map<string, Pattern[]>();
  /** Prefix patterns (first word is a stem), keyed by the stem's first three key characters. */
  private readonly stems = new Map<string, Pattern[]>();
  /** Every single-word form (including multi-word terms written as one word) for substring search. */
  private readonly singles: Pattern[] = [];
  /** Every word of every term and group (keys), and the stems: what this lexicon "knows". */
  private readonly vocabulary = new Set<string>();
  /** Stems of four or more letters, by their first four letters. */
  private readonly stemIndex = new Map<string, PatternWord[]>();

  constructor(private readonly groups: Map<string, Set<string>>) {
    for (const g of groups.values()) for (const k of g) this.vocabulary.add(k);
  }

  /** Whether a token is a word of this lexicon: exactly, or extending a stem (of four or more letters, longer than `stemLongerThan`). */
  knows(t: Token, stemLongerThan = 0): boolean {
    if (this.vocabulary.has(t.key)) return true;
    const stems = this.stemIndex.get(t.key.slice(0, 4));
    if (!stems) return false;
    for (const w of stems) if (w.key.length > stemLongerThan && t.key.startsWith(w.key)) return true;
    return false;
  }

  addVocabulary(words: Iterable<string>): void {
    for (const w of words) for (const k of wordKeys(w)) this.vocabulary.add(k.key);
  }

  groupKeys(name: string): Set<string> | undefined {
    return this.groups.get(name);
  }

  addEntry(data: EntryData, where: string): void {
    if (!TAGS.has(data.tag as Tag)) throw new Error(`${where}: unknown tag '${data.tag}'`);
    const entry: CompiledEntry = {
      tag: data.tag as Tag,
      level: data.level ?? 0,
      window: data.window ?? 4,
      near: data.near ? this.resolveGroups(data.near, where) : undefined,
      unlessNear: data.unlessNear?.length ? this.resolveGroups(data.unlessNear, where) : undefined,
      unlessAfter: data.unlessAfter?.length ? this.resolveGroups(data.unlessAfter, where) : undefined,
    };
    for (const term of data.terms) for (const t of expandTerm(String(term))) this.addTerm(t, entry);
  }

  addTerm(term: string, entry: CompiledEntry, person?: string): void {
    const words = wordKeys(term);
    if (words.length === 0) return;
    this.addPattern({ words, term, entry, person });
    if (words.length > 1) {
      // The same term written as one word ("selfharm", "alqaeda").
      const joined = wordKeys(term.replace(/[\s\-_'.]+/g, ''));
      if (joined.length === 1) this.addPattern({ words: joined, term, entry, person });
    }
  }

  private addPattern(p: Pattern): void {
    for (const w of p.words) {
      if (w.prefix) {
        if (w.key.length >= 4) {
          const k = w.key.slice(0, 4);
          const list = this.stemIndex.get(k) ?? this.stemIndex.set(k, []).get(k)!;
          if (!list.some((x) => x.key === w.key)) list.push(w);
        }
      } else {
        this.vocabulary.add(w.key);
      }
    }
    const first = p.words[0]!;
    if (first.prefix) {
      const k = first.key.slice(0, 3);
      (this.stems.get(k) ?? this.stems.set(k, []).get(k)!).push(p);
    } else {
      (this.exact.get(first.key) ?? this.exact.set(first.key, []).get(first.key)!).push(p);
    }
    if (p.words.length === 1) this.singles.push(p);
  }

  private resolveGroups(names: string[], where: string): Set<string> {
    const out = new Set<string>();
    for (const name of names) {
      const g = this.groups.get(name);
      if (g) for (const k of g) out.add(k);
      else for (const w of wordKeys(name)) out.add(w.key);
      if (!g && /^[a-z]+_[a-z_]+$/.test(name)) throw new Error(`${where}: unknown group '${name}'`);
    }
    return out;
  }

  /** Finds every pattern match in the token list (before context rules). */
  matchTokens(tokens: Token[], out: Match[]): void {
    for (let i = 0; i < tokens.length; i++) {
      const tok = tokens[i]!;
      this.matchAt(tokens, i, tok, out);
      if (tok.alts) for (const alt of tok.alts) this.matchAt(tokens, i, alt, out);
    }
  }

  private matchAt(tokens: Token[], i: number, first: Token, out: Match[]): void {
    const exact = this.exact.get(first.key);
    if (exact) for (const p of exact) this.tryPattern(p, tokens, i, first, out);
    if (first.key.length >= 3) {
      const stems = this.stems.get(first.key.slice(0, 3));
      if (stems) for (const p of stems) this.tryPattern(p, tokens, i, first, out);
    }
  }

  private tryPattern(p: Pattern, tokens: Token[], i: number, first: Token, out: Match[]): void {
    if (!wordMatches(p.words[0]!, first)) return;
    let j = i + 1;
    for (let w = 1; w < p.words.length; w++, j++) {
      const t = tokens[j];
      if (!t || !(wordMatches(p.words[w]!, t) || (t.alts !== undefined && t.alts.some((a) => wordMatches(p.words[w]!, a))))) return;
    }
    out.push({
      tag: p.entry.tag, level: p.entry.level, term: p.term, person: p.person,
      from: i, to: j, start: first.start, end: tokens[j - 1]!.end,
    });
    entryOf.set(out[out.length - 1]!, p.entry);
  }

  /**
   * Substring search inside letters that were typed spaced out ("n u d e c h i l d"): word
   * boundaries are gone, so single-word terms are looked for anywhere in the joined run.
   * Matches span the letters' tokens.
   */
  matchJoined(letters: Token[], tokenIndex: number, out: Match[]): void {
    // Squeezed key of the joined letters and, per key character, the letter it starts at.
    let key = '';
    const startLetter: number[] = [];
    let prev = '';
    for (let k = 0; k < letters.length; k++) {
      const ch = leetAll(letters[k]!.text);
      if (ch !== prev) {
        key += ch;
        startLetter.push(k);
        prev = ch;
      }
    }
    startLetter.push(letters.length);
    for (const p of this.singles) {
      const w = p.words[0]!;
      if (w.key.length < 3) continue;
      let at = key.indexOf(w.key);
      while (at >= 0) {
        const a = startLetter[at]!;
        const b = w.prefix ? startLetter[at + w.key.length]! : startLetter[at + w.key.length]!;
        out.push({
          tag: p.entry.tag, level: p.entry.level, term: p.term, person: p.person,
          from: tokenIndex, to: tokenIndex + 1,
          start: letters[a]!.start, end: letters[b - 1]!.end,
        });
        entryOf.set(out[out.length - 1]!, p.entry);
        at = key.indexOf(w.key, at + 1);
      }
    }
  }

  /** Matches single-word patterns on a virtual token made of two adjacent tokens. */
  matchCompound(tok: Token, from: number, to: number, out: Match[], tags?: ReadonlySet<Tag>): void {
    const exact = this.exact.get(tok.key);
    const cands = [...(exact ?? []), ...(tok.key.length >= 3 ? this.stems.get(tok.key.slice(0, 3)) ?? [] : [])];
    for (const p of cands) {
      if (p.words.length !== 1 || !wordMatches(p.words[0]!, tok)) continue;
      // Across a space only whole terms count: a stem would let "toddler playing" read as one word.
      if (tags && (!tags.has(p.entry.tag) || p.words[0]!.prefix)) continue;
      out.push({ tag: p.entry.tag, level: p.entry.level, term: p.term, person: p.person, from, to, start: tok.start, end: tok.end, compound: true });
      entryOf.set(out[out.length - 1]!, p.entry);
    }
  }
}

function wordMatches(w: PatternWord, t: Token): boolean {
  if (w.prefix) {
    return t.key.startsWith(w.key) && runsCover(t.runs, w.runs, w.runs.length);
  }
  return t.key === w.key && runsCover(t.runs, w.runs);
}

/** The compiled entry behind each match (for its context conditions). */
const entryOf = new WeakMap<Match, CompiledEntry>();

export function compileGroups(groups: Record<string, string[]>): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const [name, words] of Object.entries(groups)) {
    const set = new Set<string>();
    for (const w of words) {
      const keys = wordKeys(String(w));
      // Context is checked word by word, so a phrase's words would each count alone: the
      // inanimate "mannequin head" once made every "head" inanimate and dropped "a
      // decapitated head".
      if (keys.length !== 1) throw new Error(`lexicon.yaml groups.${name}: "${String(w)}" is not one word; groups hold single words (put phrases in an entry's terms).`);
      set.add(keys[0]!.key);
    }
    out.set(name, set);
  }
  return out;
}

let baseIndex: LexiconIndex | undefined;

/** The project's lexicon and public-figures list, compiled once per process. */
export function baseLexicon(): LexiconIndex {
  if (baseIndex) return baseIndex;
  const lex = loadYaml<LexiconData>('lexicon.yaml');
  const idx = new LexiconIndex(compileGroups(lex.groups));
  lex.entries.forEach((e, i) => idx.addEntry(e, `lexicon.yaml entries[${i}]`));
  const people = loadYaml<PeopleData>('public-figures.yaml');
  addPeople(idx, people.people);
  // Words the category rules read directly (ages).
  idx.addVocabulary(['year', 'years', 'yr', 'yrs', 'yo', 'old', 'age', 'aged', 'ages', 'one', 'two', 'three', 'four',
    'five', 'six', 'seven', 'eight', 'nine', 'ten', 'eleven', 'twelve', 'thirteen', 'fourteen', 'fifteen', 'sixteen',
    'seventeen', 'eighteen', 'nineteen', 'twenty']);
  baseIndex = idx;
  return idx;
}

const personEntry: CompiledEntry = { tag: 'person', level: 0, window: 0 };

export function addPeople(idx: LexiconIndex, people: { name: string; aliases?: string[] }[]): void {
  for (const p of people) {
    idx.addTerm(p.name, personEntry, p.name);
    for (const a of p.aliases ?? []) idx.addTerm(a, personEntry, p.name);
  }
}

/** An index holding only the operator's protected persons (built per policy). */
export function peopleIndex(people: { name: string; aliases?: string[] }[]): LexiconIndex {
  const idx = new LexiconIndex(new Map());
  addPeople(idx, people);
  return idx;
}

function nearAny(tokens: Token[], from: number, to: number, window: number, keys: Set<string>, dir: 'both' | 'after'): boolean {
  const lo = dir === 'after' ? to : Math.max(0, from - window);
  const hi = Math.min(tokens.length, to + window);
  for (let k = lo; k < hi; k++) {
    if (k >= from && k < to) continue;
    const t = tokens[k]!;
    if (keys.has(t.key) || (t.alts && t.alts.some((a) => keys.has(a.key)))) return true;
  }
  return false;
}

/** Applies each match's `near` / `unlessNear` / `unlessAfter` conditions. */
export function applyContext(tokens: Token[], matches: Match[]): Match[] {
  return matches.filter((m) => {
    const e = entryOf.get(m);
    if (!e) return true;
    if (e.near && !nearAny(tokens, m.from, m.to, e.window, e.near, 'both')) return false;
    if (e.unlessNear && nearAny(tokens, m.from, m.to, e.window, e.unlessNear, 'both')) return false;
    if (e.unlessAfter && nearAny(tokens, m.from, m.to, e.window, e.unlessAfter, 'after')) return false;
    return true;
  });
}

/**
 * Drops matches inside a longer match ("skinned" inside "skinned knee", "bloody" inside
 * "bloody mary") and duplicates; benign matches are then removed (they have done their job).
 */
export function resolveOverlaps(matches: Match[]): Match[] {
  const sorted = [...matches].sort((a, b) => (b.to - b.from) - (a.to - a.from) || a.from - b.from);
  const kept: Match[] = [];
  const seen = new Set<string>();
  for (const m of sorted) {
    const inside = kept.some((k) => (!k.compound || k.tag === 'benign') && k.from <= m.from && m.to <= k.to && (k.to - k.from) > (m.to - m.from));
    if (inside) continue;
    const id = `${m.tag}:${m.from}:${m.to}:${m.level}:${m.person ?? ''}`;
    if (seen.has(id)) continue;
    seen.add(id);
    kept.push(m);
  }
  return kept.filter((m) => m.tag !== 'benign').sort((a, b) => a.from - b.from || a.to - b.to);
}

// Short words that are words in their own right, never a fragment ("shot a" is not "shota").
const FUNCTION_WORDS = new Set(['a', 'an', 'the', 'of', 'in', 'on', 'at', 'to', 'is', 'it', 'its', 'and', 'or', 'as', 'by',
  'be', 'we', 'he', 'me', 'my', 'no', 'so', 'do', 'go', 'up', 'us', 'if', 'am', 'are', 'was', 'for', 'not', 'but',
  'her', 'his', 'him', 'she', 'you', 'our', 'all', 'any', 'one', 'two', 'off', 'out', 'with', 'from', 'into', 'onto']);

const SPLIT_WORD_TAGS: ReadonlySet<Tag> = new Set<Tag>([
  'minor', 'minor_sexual', 'sexual', 'sexual_violence', 'injury', 'extremist', 'extremist_org', 'selfharm', 'selfharm_imperative',
]);

/** Tokenises `text` and finds all lexicon (and protected-person) matches after context rules. */
/**
 * Re-joins a word split by one typed space ("ero tic", "Obam a", "ye ar"): two tokens
 * separated by a single space become one when at least one of them is no word the lexicon
 * knows, neither is a number, and together they spell a word it knows. Known words next
 * to each other are left alone ("shot a" stays two words), so ordinary text is unchanged.
 */
export function rejoinSplitWords(tokens: Token[], text: string, indexes: LexiconIndex[]): Token[] {
  const knows = (t: Token, stemLongerThan = 0) => indexes.some((idx) => idx.knows(t, stemLongerThan));
  const out: Token[] = [];
  const known = tokens.map((t) => knows(t));
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    const b = tokens[i + 1];
    if (b && !(known[i] && known[i + 1]) && t.num === undefined && b.num === undefined && !t.letters && !b.letters
      && b.start === t.end + 1 && text.charCodeAt(t.end) === 32 && !(FUNCTION_WORDS.has(t.text) && FUNCTION_WORDS.has(b.text))) {
      const { key, runs } = squeeze(t.text + b.text);
      const joined: Token = { text: t.text + b.text, key, runs, start: t.start, end: b.end };
      // A stem must reach across the space, or "armed robber" would read as "arm...".
      if (knows(joined, t.key.length) && !(FUNCTION_WORDS.has(t.text) && known[i + 1]) && !(FUNCTION_WORDS.has(b.text) && known[i])) {
        out.push(joined);
        i++;
        continue;
      }
    }
    out.push(t);
  }
  return out;
}

export function analyze(text: string, indexes: LexiconIndex[]): Analysis {
  const tokens = rejoinSplitWords(mergeSpacedLetters(tokenize(foldText(text)), text), text, indexes);
  const raw: Match[] = [];
  for (const idx of indexes) idx.matchTokens(tokens, raw);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t.unsegmented && t.letters) for (const idx of indexes) idx.matchJoined(t.letters, i, raw);
    // A word split by punctuation ("se.xy", "al-qaeda") or by a space typed into it
    // ("nu de", "gor e"): the two tokens are also read as one. Across a space only the
    // vocabulary of refused content counts, so ordinary word pairs cannot produce signals.
    const b = tokens[i + 1];
    if (b && b.start > t.end && b.start - t.end <= 2) {
      const gap = text.slice(t.end, b.start);
      const spaced = /\s/.test(gap);
      if (!spaced || (gap === ' ' && t.text.length + b.text.length >= 3 && !FUNCTION_WORDS.has(t.text) && !FUNCTION_WORDS.has(b.text))) {
        const { key, runs } = squeeze(t.text + b.text);
        const compound: Token = { text: t.text + b.text, key, runs, start: t.start, end: b.end };
        for (const idx of indexes) idx.matchCompound(compound, i, i + 2, raw, spaced ? SPLIT_WORD_TAGS : undefined);
      }
    }
  }
  return { tokens, matches: resolveOverlaps(applyContext(tokens, raw)) };
}
