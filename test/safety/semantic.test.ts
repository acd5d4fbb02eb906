import { describe, expect, it } from 'vitest';
import { defaultPolicy } from '../../src/safety/policy/policy.ts';
import { cosine, defaultConceptPhrases, SemanticBank } from '../../src/safety/screen/semantic.ts';
import { Screener } from '../../src/safety/screen/screener.ts';
import { stubEmbedder } from './support/stub-embedder.ts';

describe('semantic layer', () => {
  it('cosine similarity', () => {
    expect(cosine(Float32Array.from([1, 0]), Float32Array.from([2, 0]))).toBeCloseTo(1, 6);
    expect(cosine(Float32Array.from([1, 0]), Float32Array.from([0, 3]))).toBeCloseTo(0, 6);
    expect(cosine(Float32Array.from([1, 1]), Float32Array.from([1, 0]))).toBeCloseTo(Math.SQRT1_2, 6);
    expect(() => cosine(new Float32Array(2), new Float32Array(3))).toThrow(/dimensions/);
    // An all-zero embedding has no direction and matches nothing.
    expect(cosine(new Float32Array(2), Float32Array.from([1, 0]))).toBe(0);
  });

  it('embeds the concept bank once and reports the best phrase per category at or above its threshold', async () => {
    const calls: string[][] = [];
    const bank = new SemanticBank(stubEmbedder(calls), [
      { category: 'extremist', text: 'terrorist propaganda poster' },
      { category: 'extremist', text: 'hate rally banner' },
      { category: 'graphic_injury', text: 'a bleeding wound', level: 2 },
    ]);
    const hits = await bank.match('terrorist propaganda poster', { extremist: 0.9, graphic_injury: 0.9 });
    expect(hits).toEqual([{ category: 'extremist', phrase: 'terrorist propaganda poster', cosine: expect.closeTo(1, 6), threshold: 0.9, level: undefined }]);
    expect(await bank.match('a quiet lake', { extremist: 0.9 })).toEqual([]);
    await bank.match('another prompt', {});
    expect(calls.map((c) => c.length)).toEqual([3, 1, 1, 1]); // bank once, then one per prompt
  });

  it('turns a semantic hit on a hard-blocked category into a refusal with a semantic evidence entry', async () => {
    const policy = defaultPolicy();
    policy.semantic.enabled = true;
    policy.semantic.thresholds.self_harm_promotion = 0.99;
    const s = new Screener(policy, { embedder: stubEmbedder(), conceptPhrases: [{ category: 'self_harm_promotion', text: 'quiet melancholy garden poster' }] });
    expect(s.semanticEnabled).toBe(true);
    const r = await s.screenAsync({ prompt: 'quiet melancholy garden poster' }, 'admin');
    expect(r.verdict).toBe('refuse');
    expect(r.categories[0]).toMatchObject({ category: 'self_harm_promotion', source: 'semantic' });
    expect(r.categories[0]!.evidence[0]).toMatchObject({ signal: 'semantic', concept: 'quiet melancholy garden poster' });
    // The lexicon alone sees nothing in it.
    expect(s.screen({ prompt: 'quiet melancholy garden poster' }, 'admin').verdict).toBe('allow');
  });

  it('raises the detected intensity from a graded concept phrase and clamps it to the role', async () => {
    const policy = defaultPolicy();
    policy.semantic.enabled = true;
    const s = new Screener(policy, { embedder: stubEmbedder(), conceptPhrases: [{ category: 'graphic_injury', text: 'crimson ruin of a body', level: 3 }] });
    const r = await s.screenAsync({ prompt: 'crimson ruin of a body' }, 'creator');
    expect(r).toMatchObject({ verdict: 'clamp', intensity: 3, effectiveIntensity: 2 });
  });

  it('is off by default and when the policy disables it, and the default bank covers every category', async () => {
    expect(defaultPolicy().semantic.enabled).toBe(false);
    const policy = defaultPolicy();
    policy.semantic.enabled = false;
    expect(new Screener(policy, { embedder: stubEmbedder() }).semanticEnabled).toBe(false);
    const cats = new Set(defaultConceptPhrases().map((p) => p.category));
    expect([...cats].sort()).toEqual(Object.keys(defaultPolicy().semantic.thresholds).sort());
  });
});
