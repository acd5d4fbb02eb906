import type { TextEmbedder } from '../../../src/safety/screen/semantic.ts';

/**
 * A deterministic stand-in for the CLIP text encoder: bag of words hashed into 64 buckets.
 * Identical wordings embed identically (cosine 1), so a concept phrase matches itself; it
 * exercises the semantic layer's plumbing (bank, thresholds, verdicts), not semantics.
 * `calls` collects each batch of texts embedded.
 */
export function stubEmbedder(calls: string[][] = []): TextEmbedder {
  return async (texts) => {
    calls.push(texts);
    return texts.map((t) => {
      const v = new Float32Array(64);
      for (const w of t.toLowerCase().split(/\W+/).filter(Boolean)) {
        let h = 2166136261;
        for (let i = 0; i < w.length; i++) h = Math.imul(h ^ w.charCodeAt(i), 16777619);
        v[(h >>> 0) % 64]! += 1;
      }
      return v;
    });
  };
}
