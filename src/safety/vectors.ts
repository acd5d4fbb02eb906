// Vector similarity shared by the semantic screening layer (text embeddings) and the
// likeness check (face embeddings); each decides what a mismatch or a zero vector means.

/**
 * Cosine similarity of two vectors of the same length (the caller checks the lengths);
 * null when either is all zeros and so has no direction.
 */
export function cosineOrNull(a: ArrayLike<number>, b: ArrayLike<number>): number | null {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  return na === 0 || nb === 0 ? null : dot / Math.sqrt(na * nb);
}
