// Semantic layer: compares a prompt's text embedding with a bank of concept phrases per
// category. The engine supplies the embedder (CLIP text encoder, pooled and projected);
// this module only needs a function from texts to vectors.
import type { Category, IntensityLevel } from '../categories.ts';
import { cosineOrNull } from '../vectors.ts';
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

/** Cosine similarity; 0 against an all-zero vector (it matches nothing). */
export function cosine(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`embedding dimensions differ: ${a.length} vs ${b.length}`);
  return cosineOrNull(a, b) ?? 0;
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

/** The part of a CLIP text-encoder session the embedder needs (src/models/sessions.ts). */
export interface PooledTextEncoder {
  run(ids: readonly (readonly number[])[]): Promise<{ pooled: { shape: readonly number[]; toFloat32(): Float32Array } }>;
}

/** The part of the CLIP tokenizer the embedder needs (src/text/tokenizer.ts). */
export interface PaddedTokenizer {
  encodePadded(text: string): number[];
}

/**
 * A TextEmbedder over a CLIP text encoder: the pooled output (last hidden state at the EOS
 * token; SD 1.5's CLIPTextModel has no projection), scaled to unit length so cosines are
 * dot products. Texts are encoded in batches of `batchSize` to bound memory on large banks.
 */
export function clipTextEmbedder(encoder: PooledTextEncoder, tokenizer: PaddedTokenizer, batchSize = 16): TextEmbedder {
  return async (texts) => {
    const out: Float32Array[] = [];
    for (let i = 0; i < texts.length; i += batchSize) {
      const chunk = texts.slice(i, i + batchSize);
      const { pooled } = await encoder.run(chunk.map((t) => tokenizer.encodePadded(t)));
      const width = pooled.shape[pooled.shape.length - 1]!;
      const data = pooled.toFloat32();
      for (let b = 0; b < chunk.length; b++) {
        const v = data.slice(b * width, (b + 1) * width);
        let norm = 0;
        for (const x of v) norm += x * x;
        norm = Math.sqrt(norm);
        if (norm > 0) for (let k = 0; k < width; k++) v[k]! /= norm;
        out.push(v);
      }
    }
    return out;
  };
}
