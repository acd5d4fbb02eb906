// Category rules: how lexicon signals combine into categories and an intensity. The
// vocabulary is data (data/lexicon.yaml); the combinations are written here so each hard
// block reads as one sentence.
import type { Category, IntensityLevel } from '../categories.ts';
import type { Token } from './normalize.ts';
import type { Analysis, LexiconIndex, Match, Tag } from './lexicon.ts';

export type Field = 'prompt' | 'negative_prompt' | 'lora';

export interface FieldAnalysis extends Analysis {
  field: Field;
  /** Index of the LoRA name when field is 'lora'. */
  index?: number;
  text: string;
}

export interface Signal {
  field: Field;
  index?: number;
  tag: Tag | 'age_minor' | 'age_adult' | 'negative_clothing' | 'negative_age';
  term: string;
  start: number;
  end: number;
  level?: number;
  person?: string;
}

export interface RuleHit {
  category: Category;
  signals: Signal[];
  /** The rules that fired for the category (ids such as 'clear_minor+injury'). */
  rules: string[];
}

export interface RuleResult {
  hits: RuleHit[];
  /** Intensity the wording asks for (0..3). */
  intensity: IntensityLevel;
  intensitySignals: Signal[];
  /** Real people named (for the audit and the output checks). */
  persons: string[];
}

const NUMBER_WORDS = new Map<string, number>(Object.entries({
  one: 1, two: 2, three: 3, four: 4, five: 5, six: 6, seven: 7, eight: 8, nine: 9, ten: 10, eleven: 11,
  twelve: 12, thirteen: 13, fourteen: 14, fifteen: 15, sixteen: 16, seventeen: 17, eighteen: 18, nineteen: 19,
  twenty: 20, thirty: 30, forty: 40, fifty: 50, sixty: 60, seventy: 70, eighty: 80, ninety: 90,
}));
// Compared by repeated-letter key so "yeeears" still reads as "years".
const AGE_UNITS = new Set(['year', 'years', 'yr', 'yrs', 'yo', 'y', 'yearold', 'yearolds']);
const AGE_LEADS = new Set(['age', 'aged', 'ages']);
const OLD = new Set(['old', 'olds']);

function reads(t: Token | undefined, keys: Set<string>): boolean {
  if (!t) return false;
  return keys.has(t.key) || (t.alts !== undefined && t.alts.some((a) => keys.has(a.key)));
}

function numberAt(tokens: Token[], i: number): { value: number; next: number } | undefined {
  const t = tokens[i];
  if (!t) return undefined;
  const c = t.text.charCodeAt(0);
  let value: number | undefined = c >= 48 && c <= 57 ? (/^\d+$/.test(t.text) ? t.num : undefined) : NUMBER_WORDS.get(t.text);
  if (value === undefined) return undefined;
  let next = i + 1;
  // "twenty one", "twenty-one"
  const u = tokens[next];
  const ones = u ? NUMBER_WORDS.get(u.text) : undefined;
  if (value >= 20 && value % 10 === 0 && ones !== undefined && ones < 10) {
    value += ones;
    next++;
  }
  return { value, next };
}

/** Ages stated in the text: "13 year old", "13yo", "aged 8", "age 15", "fourteen-year-old". */
export function findAges(tokens: Token[], animal: Set<string> | undefined): { value: number; from: number; to: number }[] {
  const out: { value: number; from: number; to: number }[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    // "13yo", "8yrs"
    if (t.alts && t.num !== undefined && !/^\d+$/.test(t.text) && t.alts.some((a) => AGE_UNITS.has(a.key))) {
      if (!followedByAnimal(tokens, i + 1, animal)) out.push({ value: t.num, from: i, to: i + 1 });
      continue;
    }
    if (reads(t, AGE_LEADS)) {
      const n = numberAt(tokens, i + 1);
      if (n) out.push({ value: n.value, from: i, to: n.next });
      continue;
    }
    const n = numberAt(tokens, i);
    if (!n) continue;
    const unit = tokens[n.next];
    if (reads(unit, AGE_UNITS)) {
      let to = n.next + 1;
      const hasOld = reads(tokens[to], OLD);
      if (hasOld) to++;
      // "a 2 year old dog" is not about a person; "10 years ago" is not an age.
      if (!hasOld && !reads(unit, new Set(['yo', 'y']))) continue;
      if (!followedByAnimal(tokens, to, animal)) out.push({ value: n.value, from: i, to });
    }
  }
  return out;
}

function followedByAnimal(tokens: Token[], at: number, animal: Set<string> | undefined): boolean {
  if (!animal) return false;
  for (let k = at; k < Math.min(tokens.length, at + 2); k++) if (animal.has(tokens[k]!.key)) return true;
  return false;
}

const CLAUSE_BREAK = /[,.;:!?()\n]/;
const CLAUSE_WORDS = new Set(['and', 'but', 'while', 'yet', 'then']);

/** A negation word up to four words before the match, within the same clause ("no one was carrying firearms"). */
function isNegated(text: string, tokens: Token[], m: Match, negation: Set<string>): boolean {
  for (let k = m.from - 1; k >= Math.max(0, m.from - 4); k--) {
    const t = tokens[k]!;
    if (CLAUSE_BREAK.test(text.slice(t.end, tokens[k + 1]!.start))) return false;
    if (negation.has(t.key)) return true;
    if (CLAUSE_WORDS.has(t.text)) return false;
  }
  return false;
}

const STYLE_ART_WORDS = new Set(['art', 'painting', 'painted', 'drawn', 'drawing', 'illustration', 'illustrated',
  'photo', 'photograph', 'photographed', 'photography', 'directed', 'written', 'sculpture', 'designed', 'design',
  'music', 'song', 'poem', 'artwork', 'concept', 'render', 'made', 'created', 'cover', 'album', 'book', 'film',
  'movie', 'portrait', 'picture', 'image', 'sketch', 'comic', 'poster']);

/** A name used as a style or authorship reference ("in the style of X", "painting by X"). */
function isStyleReference(tokens: Token[], m: Match): boolean {
  const p1 = tokens[m.from - 1]?.text;
  const p2 = tokens[m.from - 2]?.text;
  if (p1 === 'of' && (p2 === 'style' || p2 === 'manner')) return true;
  if (p1 === 'by' && p2 !== undefined && STYLE_ART_WORDS.has(p2)) return true;
  const n1 = tokens[m.to]?.text;
  return n1 === 'style' || n1 === 'inspired' || n1 === 'esque';
}

function sig(f: FieldAnalysis, m: Match, tag?: Signal['tag']): Signal {
  return { field: f.field, index: f.index, tag: tag ?? m.tag, term: m.term, start: m.start, end: m.end, level: m.level || undefined, person: m.person };
}

/** Whether a match of `tag` lies within `window` tokens of any match of `near`. */
function within(a: Match, b: Match, window: number): boolean {
  return a.from - b.to <= window && b.from - a.to <= window;
}

interface FieldSignals {
  f: FieldAnalysis;
  by: Map<Tag, Match[]>;
}

function groupByTag(f: FieldAnalysis, negation: Set<string>): FieldSignals {
  const by = new Map<Tag, Match[]>();
  for (const m of f.matches) {
    if ((m.tag === 'injury' || m.tag === 'injury_care' || m.tag === 'threat' || m.tag === 'sexual' || m.tag === 'suggestive') && isNegated(f.text, f.tokens, m, negation)) continue;
    if (m.tag === 'person' && isStyleReference(f.tokens, m)) continue;
    (by.get(m.tag) ?? by.set(m.tag, []).get(m.tag)!).push(m);
  }
  return { f, by };
}

function all(fields: FieldSignals[], tag: Tag): Signal[] {
  const out: Signal[] = [];
  for (const { f, by } of fields) for (const m of by.get(tag) ?? []) out.push(sig(f, m));
  return out;
}

/** Pairs (a, b) of matches of two tags within `window` tokens of each other in the same field. */
function nearPairs(fields: FieldSignals[], tagA: Tag, tagB: Tag, window: number): Signal[] {
  const out: Signal[] = [];
  for (const { f, by } of fields) {
    const as = by.get(tagA);
    const bs = by.get(tagB);
    if (!as || !bs) continue;
    for (const a of as) for (const b of bs) {
      if (a !== b && within(a, b, window)) out.push(sig(f, a), sig(f, b));
    }
  }
  return out;
}

export interface RuleContext {
  negation: Set<string>;
  animal: Set<string> | undefined;
  counter: Set<string> | undefined;
  memorial: Set<string> | undefined;
}

export function contextFrom(idx: LexiconIndex): RuleContext {
  return {
    negation: idx.groupKeys('negation') ?? new Set(),
    animal: idx.groupKeys('animal'),
    counter: idx.groupKeys('counter'),
    memorial: idx.groupKeys('memorial'),
  };
}

function anyGroupWord(f: FieldAnalysis, keys: Set<string> | undefined): Token | undefined {
  if (!keys) return undefined;
  return f.tokens.find((t) => keys.has(t.key));
}

/** Applies the category rules to the analysed prompt, negative prompt and LoRA names. */
export function applyRules(fieldsIn: FieldAnalysis[], ctx: RuleContext): RuleResult {
  const positive = fieldsIn.filter((f) => f.field !== 'negative_prompt').map((f) => groupByTag(f, ctx.negation));
  const negative = fieldsIn.filter((f) => f.field === 'negative_prompt').map((f) => groupByTag(f, ctx.negation));
  const hits: RuleHit[] = [];
  // `rule` names the rule that fired, for the audit log: which combination of signals put
  // the request in the category.
  const add = (category: Category, signals: Signal[], rule: string) => {
    if (signals.length) hits.push({ category, signals, rules: [rule] });
  };

  // Ages.
  const minorAges: Signal[] = [];
  const adultAges: Signal[] = [];
  for (const { f } of positive) {
    for (const a of findAges(f.tokens, ctx.animal)) {
      const s: Signal = { field: f.field, index: f.index, tag: a.value < 18 ? 'age_minor' : 'age_adult', term: `age ${a.value}`,
        start: f.tokens[a.from]!.start, end: f.tokens[a.to - 1]!.end };
      (a.value < 18 ? minorAges : adultAges).push(s);
    }
  }

  // Negative-prompt inversions: asking to avoid clothes asks for nudity; avoiding adult
  // features asks for youth.
  const negClothing = all(negative, 'clothing').map((s) => ({ ...s, tag: 'negative_clothing' as const }));
  const negAge = all(negative, 'age_marker').map((s) => ({ ...s, tag: 'negative_age' as const }));

  const minorStrong = [...all(positive, 'minor'), ...minorAges];
  const minorWeak = all(positive, 'minor_weak');
  const adult = [...all(positive, 'adult'), ...adultAges];
  const minors = minorStrong.length ? minorStrong : adult.length ? [] : minorWeak;
  const minorsAny = minors.length ? minors : negAge.length ? [...minorWeak, ...negAge] : [];

  const sexual = [...all(positive, 'sexual'), ...negClothing];
  const suggestive = all(positive, 'suggestive');
  const attire = all(positive, 'attire');

  // Intensity.
  const injury = all(positive, 'injury');
  const threat = all(positive, 'threat');
  const care = all(positive, 'injury_care');
  let intensity = 0;
  for (const s of injury) intensity = Math.max(intensity, s.level ?? 0);
  const intensitySignals: Signal[] = [...injury];
  if (intensity >= 1) {
    const up = all(positive, 'intensify');
    const down = all(positive, 'soften');
    if (up.length && intensity < 3) {
      intensity++;
      intensitySignals.push(...up);
    } else if (down.length && !up.length && intensity > 1) {
      intensity--;
      intensitySignals.push(...down);
    }
  } else if (threat.length || care.length) {
    // Weapons, fights and treated injuries alone: level 1.
    intensity = 1;
    intensitySignals.push(...threat, ...care);
  }

  // Minors.
  add('minors_sexual', all(positive, 'minor_sexual'), 'minor_sexual_term');
  // "girl"/"boy" alone may be adults: with explicit sexual wording they count as minors,
  // with merely suggestive wording only a clear minor term or a stated age under 18 does.
  if (minorsAny.length && sexual.length) add('minors_sexual', [...minorsAny, ...sexual], 'minor+sexual');
  const clearMinors = [...minorStrong, ...negAge];
  if (clearMinors.length && suggestive.length) add('minors_sexual', [...clearMinors, ...suggestive], 'clear_minor+suggestive');
  if (minors.length && attire.length && minorAges.length) add('minors_sexual', [...minors, ...attire], 'minor_age+attire');
  // A clear minor with any injury; "girl" alone (often an adult in prompts) from level 2.
  if (minorStrong.length && injury.length) add('minors_graded', [...minorStrong, ...injury], 'clear_minor+injury');
  else if (minors.length && injury.some((s) => (s.level ?? 0) >= 2)) add('minors_graded', [...minors, ...injury], 'minor+injury_level2');

  // Sexual violence and sexualised injury.
  add('sexual_violence', all(positive, 'sexual_violence'), 'sexual_violence_term');
  const coercion = all(positive, 'coercion');
  if ((sexual.length || suggestive.length) && (injury.length || coercion.length)) {
    add('sexual_violence', [...sexual, ...suggestive, ...injury, ...coercion], 'sexual+injury_or_coercion');
  }

  // Real people.
  const persons = [...all(positive, 'person'), ...all(positive, 'person_title')];
  if (persons.length && injury.length) add('real_person_graded', [...persons, ...injury], 'person+injury');
  if (persons.length && (sexual.length || suggestive.length)) add('real_person_sexual', [...persons, ...sexual, ...suggestive], 'person+sexual');

  // Extremism: slogans alone; organisations and symbols in propaganda or glorifying use;
  // real atrocities and their perpetrators glorified; calls to violence against a group.
  add('extremist', all(positive, 'extremist'), 'extremist_term');
  for (const { f, by } of positive) {
    const orgs = (by.get('extremist_org') ?? []).filter((m) => !precededBy(f.tokens, m, ctx.counter, 2));
    const context = [...(by.get('propaganda') ?? []), ...(by.get('glorify') ?? [])];
    if (orgs.length && context.length) add('extremist', [...orgs, ...context].map((m) => sig(f, m)), 'org+propaganda_or_glorify');
    const atrocity = by.get('atrocity') ?? [];
    const glorify = by.get('glorify') ?? [];
    if (atrocity.length && glorify.length && !anyGroupWord(f, ctx.memorial)) {
      add('extremist', [...atrocity, ...glorify].map((m) => sig(f, m)), 'atrocity+glorify');
    }
    const incite = nearPairs([{ f, by }], 'incite_verb', 'target_group', 4);
    if (incite.length && (by.get('propaganda')?.length || by.get('glorify')?.length)) {
      add('extremist', [...incite, ...[...(by.get('propaganda') ?? []), ...glorify].map((m) => sig(f, m))], 'incitement+propaganda');
    }
  }

  // Self-harm: direct encouragement; or a self-harm term romanticised, encouraged or shown
  // with injury, unless the text is about prevention or support.
  add('self_harm_promotion', all(positive, 'selfharm_imperative'), 'selfharm_imperative');
  for (const { f, by } of positive) {
    const terms = [...(by.get('selfharm') ?? []), ...(by.get('selfharm_ambiguous') ?? [])];
    if (!terms.length) continue;
    const promote = (by.get('promote') ?? []).filter((p) => terms.some((t) => within(t, p, 8)));
    const inj = by.get('injury') ?? [];
    const prevention = by.get('prevention') ?? [];
    const strongTerms = by.get('selfharm') ?? [];
    if (promote.length && !prevention.length) add('self_harm_promotion', [...terms, ...promote].map((m) => sig(f, m)), 'selfharm+promote');
    else if (strongTerms.length && inj.length && !prevention.length) {
      add('self_harm_promotion', [...strongTerms, ...inj].map((m) => sig(f, m)), 'selfharm+injury');
    }
  }

  // Configurable categories.
  if (sexual.length) add('sexual', sexual, 'sexual_wording');
  if (intensity > 0) add('graphic_injury', intensitySignals, 'injury_level');

  const merged = mergeHits(hits);
  return {
    hits: merged,
    intensity: intensity as IntensityLevel,
    intensitySignals,
    persons: [...new Set(persons.map((p) => p.person ?? p.term))],
  };
}

function precededBy(tokens: Token[], m: Match, keys: Set<string> | undefined, window: number): boolean {
  if (!keys) return false;
  for (let k = Math.max(0, m.from - window); k < m.from; k++) if (keys.has(tokens[k]!.key)) return true;
  return false;
}

function mergeHits(hits: RuleHit[]): RuleHit[] {
  const by = new Map<Category, Signal[]>();
  const rulesOf = new Map<Category, string[]>();
  for (const h of hits) {
    by.set(h.category, [...(by.get(h.category) ?? []), ...h.signals]);
    rulesOf.set(h.category, [...new Set([...(rulesOf.get(h.category) ?? []), ...h.rules])]);
  }
  return [...by].map(([category, signals]) => {
    const seen = new Set<string>();
    const uniq = signals.filter((s) => {
      const id = `${s.field}:${s.index ?? ''}:${s.start}:${s.end}:${s.tag}`;
      if (seen.has(id)) return false;
      seen.add(id);
      return true;
    });
    return { category, signals: uniq, rules: rulesOf.get(category)! };
  });
}
