// Prompt screening: the public entry point of src/safety/screen.
import { RedlineError } from '../../errors.ts';
import {
  CATEGORY_DESCRIPTIONS, HARD_BLOCKED_CATEGORIES, isHardBlocked,
  type Category, type IntensityLevel,
} from '../categories.ts';
import { roleOf, type Policy } from '../policy/policy.ts';
import { analyze, baseLexicon, peopleIndex, type LexiconIndex } from './lexicon.ts';
import { applyRules, contextFrom, type Field, type FieldAnalysis, type RuleContext, type Signal } from './rules.ts';
import { SemanticBank, type ConceptPhrase, type SemanticHit, type TextEmbedder } from './semantic.ts';

export type Verdict = 'allow' | 'clamp' | 'refuse';

export interface ScreenRequest {
  prompt: string;
  negativePrompt?: string;
  /** LoRA names or tags attached to the request (file names, `ss_tag_frequency` tags). */
  loras?: string[];
}

export interface Evidence {
  field: Field;
  /** Which LoRA, for field 'lora'. */
  index?: number;
  /** Span in the ORIGINAL text of that field. */
  start: number;
  end: number;
  text: string;
  /** The signal this span gave (lexicon tag, age, or 'semantic'). */
  signal: string;
  /** The lexicon term that matched, as written in data/lexicon.yaml (the normalised form
   * the span was read as, e.g. "decapitat*", "age 12"); absent for the semantic layer. */
  term?: string;
  /** Semantic layer: cosine similarity and the concept phrase it matched. */
  score?: number;
  concept?: string;
}

export interface CategoryResult {
  category: Category;
  hardBlocked: boolean;
  source: 'lexicon' | 'semantic';
  /** The category rules that fired (src/safety/screen/rules.ts ids), or ['semantic']. */
  rules: string[];
  evidence: Evidence[];
}

export interface ScreenResult {
  verdict: Verdict;
  categories: CategoryResult[];
  /** Intensity 0..3 the wording asks for. */
  intensity: IntensityLevel;
  /** Intensity after the role's cap (0 when refused). */
  effectiveIntensity: IntensityLevel;
  /** The role's cap. */
  cap: IntensityLevel;
  role: string;
  /** User-facing reason for a refusal or clamp; null when allowed. Never names the words matched. */
  reason: string | null;
  /** Real people recognised (built-in list or the operator's protected persons). */
  persons: string[];
}

export interface ScreenerOptions {
  /** CLIP text embedder; enables the semantic layer (when the policy enables it). */
  embedder?: TextEmbedder;
  /** Concept phrases for the semantic layer (default: data/concepts.yaml). */
  conceptPhrases?: ConceptPhrase[];
}

const MAX_FIELD_LENGTH = 20_000;

export class Screener {
  private readonly indexes: LexiconIndex[];
  private readonly ctx: RuleContext;
  private readonly bank: SemanticBank | undefined;

  constructor(readonly policy: Policy, options: ScreenerOptions = {}) {
    const base = baseLexicon();
    this.indexes = policy.protectedPersons.length ? [base, peopleIndex(policy.protectedPersons)] : [base];
    this.ctx = contextFrom(base);
    this.bank = options.embedder && policy.semantic.enabled ? new SemanticBank(options.embedder, options.conceptPhrases) : undefined;
  }

  get semanticEnabled(): boolean {
    return this.bank !== undefined;
  }

  /** Lexicon and rules only (synchronous; no embedder needed). */
  screen(request: ScreenRequest, role: string): ScreenResult {
    return this.decide(request, role, []);
  }

  /** Lexicon, rules and (when an embedder was given) the semantic layer. */
  async screenAsync(request: ScreenRequest, role: string): Promise<ScreenResult> {
    if (!this.bank) return this.screen(request, role);
    const hits = await this.bank.match(request.prompt, this.policy.semantic.thresholds);
    return this.decide(request, role, hits);
  }

  private decide(request: ScreenRequest, role: string, semantic: SemanticHit[]): ScreenResult {
    const rolePolicy = roleOf(this.policy, role);
    const fields = this.analyzeFields(request);
    const rules = applyRules(fields, this.ctx);
    const texts = new Map<string, string>(fields.map((f) => [`${f.field}:${f.index ?? ''}`, f.text]));
    const evidenceOf = (s: Signal): Evidence => ({
      field: s.field, index: s.index, start: s.start, end: s.end,
      text: texts.get(`${s.field}:${s.index ?? ''}`)!.slice(s.start, s.end), signal: s.tag, term: s.term,
    });

    const byCategory = new Map<Category, CategoryResult>();
    for (const h of rules.hits) {
      byCategory.set(h.category, { category: h.category, hardBlocked: isHardBlocked(h.category), source: 'lexicon', rules: h.rules, evidence: h.signals.map(evidenceOf) });
    }
    let intensity = rules.intensity;
    for (const s of semantic) {
      if (byCategory.has(s.category)) continue;
      byCategory.set(s.category, {
        category: s.category, hardBlocked: isHardBlocked(s.category), source: 'semantic', rules: ['semantic'],
        evidence: [{ field: 'prompt', start: 0, end: request.prompt.length, text: request.prompt, signal: 'semantic', score: s.cosine, concept: s.phrase }],
      });
      if (s.category === 'graphic_injury' && s.level !== undefined && s.level > intensity) intensity = s.level;
    }

    const order = (c: Category) => (isHardBlocked(c) ? HARD_BLOCKED_CATEGORIES.indexOf(c) : 10 + (c === 'sexual' ? 0 : 1));
    const categories = [...byCategory.values()].sort((a, b) => order(a.category) - order(b.category));
    const hard = categories.filter((c) => c.hardBlocked);
    const sexual = byCategory.has('sexual');
    const sexualAllowed = this.policy.categories.sexual.enabled && rolePolicy.sexual;
    const cap = rolePolicy.maxIntensity;

    let verdict: Verdict;
    let reason: string | null = null;
    let effective: IntensityLevel;
    if (hard.length) {
      verdict = 'refuse';
      effective = 0;
      reason = `This request can't be generated: it falls under content Redline never produces (${CATEGORY_DESCRIPTIONS[hard[0]!.category]}).`;
    } else if (sexual && !sexualAllowed) {
      verdict = 'refuse';
      effective = 0;
      reason = "This request can't be generated: sexual content is not enabled for your account under this installation's policy.";
    } else if (sexual && intensity > 0) {
      // Unreachable through the lexicon rules (sexual + injury is sexual violence), but the
      // semantic layer can produce this pair: sexual content never combines with intensity.
      verdict = 'refuse';
      effective = 0;
      reason = "This request can't be generated: sexual content cannot be combined with graded content.";
    } else if (intensity > cap) {
      verdict = 'clamp';
      effective = cap;
      reason = `The requested intensity (level ${intensity}) is above the limit for your role (level ${cap}); the image is generated at level ${cap}.`;
    } else {
      verdict = 'allow';
      effective = intensity as IntensityLevel;
    }
    return {
      verdict, categories, intensity: intensity as IntensityLevel, effectiveIntensity: effective, cap, role, reason, persons: rules.persons,
    };
  }

  private analyzeFields(request: ScreenRequest): FieldAnalysis[] {
    if (typeof request.prompt !== 'string') throw new RedlineError('bad_request', 'prompt must be a string.');
    const fields: FieldAnalysis[] = [];
    const addField = (field: Field, text: string, index?: number) => {
      if (text.length > MAX_FIELD_LENGTH) {
        throw new RedlineError('prompt_too_long', `The ${field.replace('_', ' ')} is ${text.length} characters long; the limit is ${MAX_FIELD_LENGTH}.`);
      }
      fields.push({ field, index, text, ...analyze(text, this.indexes) });
    };
    addField('prompt', request.prompt);
    if (request.negativePrompt) addField('negative_prompt', request.negativePrompt);
    request.loras?.forEach((name, i) => addField('lora', name, i));
    return fields;
  }
}

/** Screens one prompt with the given policy and role (convenience for scripts and tests). */
export function screenPrompt(policy: Policy, role: string, prompt: string): ScreenResult {
  return new Screener(policy).screen({ prompt }, role);
}
