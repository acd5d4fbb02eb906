import { RedlineError } from '../../errors.ts';

export function cosineSimilarity(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) {
    throw new RedlineError('embedding_mismatch', `Cannot compare face embeddings of ${a.length} and ${b.length} values.`, 'Re-register the protected person with this version of Redline.');
  }
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  if (na === 0 || nb === 0) {
    throw new RedlineError('embedding_zero', 'A face embedding is all zeros and matches nothing.', 'Use a clearer, frontal photo of the face.');
  }
  return dot / Math.sqrt(na * nb);
}

export interface ProtectedEmbedding {
  name: string;
  embedding: ArrayLike<number>;
}

export interface LikenessMatch {
  name: string;
  cosine: number;
}

/** The registered person most similar to `face` (highest cosine over all their embeddings). */
export function bestLikenessMatch(face: ArrayLike<number>, gallery: readonly ProtectedEmbedding[]): LikenessMatch | undefined {
  let best: LikenessMatch | undefined;
  for (const entry of gallery) {
    const cosine = cosineSimilarity(face, entry.embedding);
    if (!best || cosine > best.cosine) best = { name: entry.name, cosine };
  }
  return best;
}
