import { RedlineError } from '../../errors.ts';
import { cosineOrNull } from '../vectors.ts';

export function cosineSimilarity(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) {
    throw new RedlineError('embedding_mismatch', `Cannot compare face embeddings of ${a.length} and ${b.length} values.`, 'Re-register the protected person with this version of Redline.');
  }
  const cosine = cosineOrNull(a, b);
  if (cosine === null) {
    throw new RedlineError('embedding_zero', 'A face embedding is all zeros and matches nothing.', 'Use a clearer, frontal photo of the face.');
  }
  return cosine;
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
