// Semantic layer: compares a prompt's text embedding with a bank of concept phrases per
// category. The engine supplies the embedder (CLIP text encoder, pooled and projected);
// this module only needs a function from texts to vectors.
import type { Category, IntensityLevel } from '../categories.ts';
import { loadYaml } from './lexicon.ts';

/** Embeds texts into vectors of one fixed dimension (need not be normalised). */
export type TextEmbedder = (texts: string[]) => Promise<Float32Array[]>;

export interface ConceptPhrase {
  category: Category;
  text: string;
  /** For graphic_injury phrases: the level the phrase stands for. */
  level?: IntensityLevel;
}

export interface SemanticHit {
  category: Category;
  phrase: string;
  cosine: number;
  threshold: number;
  level?: IntensityLevel;
}

interface ConceptsData {
  concepts: Record<string, (string | { text: string; level: number })[]>;
}

export function defaultConceptPhrases(): ConceptPhrase[] {
  const data = loadYaml<ConceptsData>('concepts.yaml');
  const out: ConceptPhrase[] = [];
  for (const [category, phrases] of Object.entries(data.concepts)) {
    for (const p of phrases) {
      out.push(typeof p === 'string'
        ? { category: category as Category, text: p }
        : { category: category as Category, text: p.text, level: p.level as IntensityLevel });
    }
  }
  return out;
}

export function cosine(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`embedding dimensions differ: ${a.length} vs ${b.length}`);
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb);
}

/** A bank of embedded concept phrases; embeds the bank once, then each prompt once. */
export class SemanticBank {
  private vectors: Float32Array[] | undefined;

  constructor(
    private readonly embed: TextEmbedder,
    readonly phrases: ConceptPhrase[] = defaultConceptPhrases(),
  ) {}

  private async bank(): Promise<Float32Array[]> {
    if (!this.vectors) {
      const v = await this.embed(this.phrases.map((p) => p.text));
      if (v.length !== this.phrases.length) {
        throw new Error(`embedder returned ${v.length} vectors for ${this.phrases.length} phrases`);
      }
      this.vectors = v;
    }
    return this.vectors;
  }

  /** The best-matching phrase per category whose cosine reaches that category's threshold. */
  async match(text: string, thresholds: Partial<Record<Category, number>>): Promise<SemanticHit[]> {
    const bank = await this.bank();
    const [q] = await this.embed([text]);
    if (!q) throw new Error('embedder returned no vector for the prompt');
    const best = new Map<Category, SemanticHit>();
    this.phrases.forEach((p, i) => {
      const threshold = thresholds[p.category];
      if (threshold === undefined) return;
      const c = cosine(q, bank[i]!);
      if (c < threshold) return;
      const prev = best.get(p.category);
      if (!prev || c > prev.cosine) best.set(p.category, { category: p.category, phrase: p.text, cosine: c, threshold, level: p.level });
    });
    return [...best.values()];
  }
}
