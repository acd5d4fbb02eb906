import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { RedlineError } from '../../../src/errors.ts';
import { bestLikenessMatch, cosineSimilarity } from '../../../src/safety/likeness/match.ts';
import { LIKENESS_FILE, LikenessStore } from '../../../src/safety/likeness/store.ts';

describe('cosine similarity', () => {
  it('matches the definition on hand-computed vectors', () => {
    expect(cosineSimilarity([1, 0], [0, 1])).toBe(0);
    expect(cosineSimilarity([1, 2, 3], [2, 4, 6])).toBeCloseTo(1, 15);
    expect(cosineSimilarity([1, 0], [-1, 0])).toBe(-1);
    // (3*4 + 4*3) / (5 * 5)
    expect(cosineSimilarity([3, 4], [4, 3])).toBeCloseTo(24 / 25, 15);
  });

  it('is scale invariant', () => {
    expect(cosineSimilarity([0.2, 0.7, 0.1], [2, 7, 1])).toBeCloseTo(1, 12);
  });

  it('refuses vectors of different length or all zeros', () => {
    expect(() => cosineSimilarity([1, 2], [1, 2, 3])).toThrow(RedlineError);
    expect(() => cosineSimilarity([0, 0], [1, 2])).toThrow(/all zeros/);
  });

  it('picks the most similar registered person', () => {
    const gallery = [
      { name: 'north', embedding: [0, 1, 0] },
      { name: 'east', embedding: [1, 0, 0] },
      { name: 'east', embedding: [1, 1, 0] },
    ];
    expect(bestLikenessMatch([0.9, 0.1, 0], gallery)).toEqual({ name: 'east', cosine: cosineSimilarity([0.9, 0.1, 0], [1, 0, 0]) });
    expect(bestLikenessMatch([1, 1, 0], [])).toBeUndefined();
  });
});

describe('likeness store', () => {
  let dir: string;
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps people across reopen, merges samples by image hash, removes by name', () => {
    dir = mkdtempSync(join(tmpdir(), 'redline-likeness-'));
    const store = LikenessStore.open(dir);
    expect(store.list()).toEqual([]);
    store.add('Ada Example', [{ imageSha256: 'aa', embedding: [1, 0] }]);
    store.add('Ada Example', [{ imageSha256: 'aa', embedding: [1, 0] }, { imageSha256: 'bb', embedding: [0.9, 0.1] }]);
    store.add('Bo Example', [{ imageSha256: 'cc', embedding: [0, 1] }]);

    const reopened = LikenessStore.open(dir);
    expect(reopened.list().map((p) => [p.name, p.samples.length])).toEqual([['Ada Example', 2], ['Bo Example', 1]]);
    expect(reopened.gallery()).toEqual([
      { name: 'Ada Example', embedding: [1, 0] },
      { name: 'Ada Example', embedding: [0.9, 0.1] },
      { name: 'Bo Example', embedding: [0, 1] },
    ]);
    reopened.remove('Ada Example');
    expect(LikenessStore.open(dir).list().map((p) => p.name)).toEqual(['Bo Example']);
    expect(() => reopened.remove('Ada Example')).toThrow(/No protected person named "Ada Example"/);
    // Photos are never stored, only embeddings.
    expect(Object.keys(JSON.parse(readFileSync(join(dir, LIKENESS_FILE), 'utf8')).people[0].samples[0])).toEqual(['imageSha256', 'embedding']);
  });

  it('live gallery sees registrations and removals made through another store handle', () => {
    dir = mkdtempSync(join(tmpdir(), 'redline-likeness-'));
    const live = LikenessStore.liveGallery(dir);
    expect(live()).toEqual([]);
    LikenessStore.open(dir).add('Cy Example', [{ imageSha256: 'dd', embedding: [0.5, 0.5] }]);
    expect(live()).toEqual([{ name: 'Cy Example', embedding: [0.5, 0.5] }]);
    LikenessStore.open(dir).add('Di Example', [{ imageSha256: 'ee', embedding: [0.1, 0.9] }]);
    expect(live().map((e) => e.name)).toEqual(['Cy Example', 'Di Example']);
    LikenessStore.open(dir).remove('Cy Example');
    expect(live().map((e) => e.name)).toEqual(['Di Example']);
  });

  it('rejects empty or control-character names', () => {
    dir = mkdtempSync(join(tmpdir(), 'redline-likeness-'));
    const store = LikenessStore.open(dir);
    expect(() => store.add('  ', [{ imageSha256: 'a', embedding: [1] }])).toThrow(/Invalid protected person name/);
    expect(() => store.add('a\nb', [{ imageSha256: 'a', embedding: [1] }])).toThrow(RedlineError);
  });

  it('fails clearly on a corrupt file or one made by another face model', () => {
    dir = mkdtempSync(join(tmpdir(), 'redline-likeness-'));
    writeFileSync(join(dir, LIKENESS_FILE), '{not json');
    expect(() => LikenessStore.open(dir)).toThrow(/not valid JSON/);
    writeFileSync(join(dir, LIKENESS_FILE), JSON.stringify({ version: 1, embeddingModel: 'other/model', people: [] }));
    expect(() => LikenessStore.open(dir)).toThrow(/made with face model other\/model/);
  });
});
