// A sidecar (or an adapter's redline.category metadata) may only declare a category Redline
// knows: an unknown one ("vfx-gore") ran ungraded at the tag's weight, because only
// graphic-injury counted as graded. Unknown categories are refused listing the known ones;
// hard-blocked ones are refused outright, however they are spelt.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  CATEGORY_METADATA_KEY, HARD_BLOCKED_SIDECAR_CATEGORIES, hardBlockedSidecarCategory, listAdapters, parseSidecar, readSidecar, SIDECAR_CATEGORIES,
} from '../../src/adapters/registry.ts';
import { ADAPTER_CATEGORY_POLICY, CONFIGURABLE_CATEGORIES, HARD_BLOCKED_CATEGORIES } from '../../src/safety/categories.ts';
import { assertAdapterGradable, isGradedAdapter, planGradedGeneration } from '../../src/safety/graded.ts';
import { loadPolicy } from '../../src/safety/policy/policy.ts';
import { VALID_GRADED_SIDECAR, writeAdapter } from '../adapters/sidecar-fixtures.ts';
import { refusalOf } from '../helpers/errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'redline-adapter-categories-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const adapter = (name: string, sidecar: unknown, metadata: Record<string, string> = {}): string => writeAdapter(dir, name, sidecar, metadata);


const intensity = VALID_GRADED_SIDECAR.intensity;
const unknown = adapter('vfxgore', { category: 'vfx-gore', intensity });
const adult = adapter('adult', { category: 'sexual' });
const unknownDeclared = adapter('declaredvfx', undefined, { [CATEGORY_METADATA_KEY]: 'vfx-gore' });
// Spellings of hard-blocked categories: reordered, singular, underscored, other words around.
const HARD_SPELLINGS: Array<[string, string]> = [
  ['sexual-minors', 'minors-sexual'],
  ['minor-sexual-v2', 'minors-sexual'],
  ['minors_sexual', 'minors-sexual'],
  ['Sexual Violence', 'sexual-violence'],
  ['extremist-propaganda', 'extremist'],
  ['self-harm-promotion', 'self-harm-promotion'],
  ['graded-real-person', 'real-person-graded'],
];
const hardFiles = HARD_SPELLINGS.map(([category], i) => adapter(`hard${i}`, { category, intensity }));
// A matching, valid graded sidecar does not launder a hard-blocked metadata declaration.
const hardDeclared = adapter('harddeclared', VALID_GRADED_SIDECAR, { [CATEGORY_METADATA_KEY]: 'sexual-minors' });
const graded = adapter('graded', VALID_GRADED_SIDECAR, { [CATEGORY_METADATA_KEY]: 'graphic-injury' });

describe('the known categories', () => {
  it('the sidecar schema lists graphic-injury, and the safety layer maps every listed category to a policy category', () => {
    expect([...SIDECAR_CATEGORIES]).toEqual(['graphic-injury']);
    expect(Object.keys(ADAPTER_CATEGORY_POLICY).sort()).toEqual([...SIDECAR_CATEGORIES].sort());
    for (const c of Object.values(ADAPTER_CATEGORY_POLICY)) expect(CONFIGURABLE_CATEGORIES).toContain(c);
  });

  it("the sidecar schema's hard-blocked list is the safety layer's, spelt with dashes", () => {
    expect([...HARD_BLOCKED_SIDECAR_CATEGORIES].sort()).toEqual(HARD_BLOCKED_CATEGORIES.map((c) => c.replace(/_/g, '-')).sort());
  });

  it('recognises hard-blocked categories however they are spelt, and nothing else', () => {
    for (const [spelling, blocked] of HARD_SPELLINGS) expect(hardBlockedSidecarCategory(spelling), spelling).toBe(blocked);
    for (const fine of ['graphic-injury', 'vfx-gore', 'sexual', 'minor-injury', 'real-person', 'self-harm', 'moulage']) expect(hardBlockedSidecarCategory(fine), fine).toBeNull();
  });
});

describe('readSidecar and the listing', () => {
  it('an unknown sidecar category is refused, naming the category and listing the known ones', () => {
    const err = refusalOf(() => readSidecar(unknown));
    expect(err.code).toBe('adapter_category_unknown');
    expect(err.message).toMatch(/Adapter "vfxgore" is refused: its sidecar vfxgore\.json declares the category "vfx-gore", which Redline does not know/);
    expect(err.message).toMatch(/not run ungraded\. Known categories: graphic-injury\./);
    expect(err.hint).toMatch(/graphic-injury/);
    expect(err.message).not.toContain(dir);
  });

  it('adult sexual content is not an adapter category either (the policy could not gate such an adapter by role)', () => {
    expect(refusalOf(() => readSidecar(adult)).code).toBe('adapter_category_unknown');
  });

  it('an unknown category declared in the metadata is refused even without a sidecar', () => {
    const err = refusalOf(() => readSidecar(unknownDeclared));
    expect(err.code).toBe('adapter_category_unknown');
    expect(err.message).toMatch(/its metadata key redline\.category declares the category "vfx-gore"/);
  });

  it('a hard-blocked category in the sidecar is refused outright, and the hint does not offer another category', () => {
    for (const [i, [spelling, blocked]] of HARD_SPELLINGS.entries()) {
      const err = refusalOf(() => readSidecar(hardFiles[i]!));
      expect(err.code, spelling).toBe('adapter_category_hard_blocked');
      expect(err.message).toContain(`the hard-blocked category ${blocked}`);
      expect(err.hint).toMatch(/^Remove the adapter/);
      expect(err.hint).not.toMatch(/graphic-injury/);
    }
  });

  it('a hard-blocked category in the metadata is refused even beside a valid graded sidecar', () => {
    const err = refusalOf(() => readSidecar(hardDeclared));
    expect(err.code).toBe('adapter_category_hard_blocked');
    expect(err.message).toMatch(/its metadata key redline\.category declares the category "sexual-minors"/);
  });

  it('the listing marks every one of them refused, and keeps a graphic-injury adapter usable', async () => {
    const list = await listAdapters(dir, { hashes: false });
    const refused = Object.fromEntries(list.map((a) => [a.name, a.refusal?.code ?? null]));
    expect(refused).toMatchObject({ vfxgore: 'adapter_category_unknown', adult: 'adapter_category_unknown', declaredvfx: 'adapter_category_unknown', harddeclared: 'adapter_category_hard_blocked', graded: null });
    for (let i = 0; i < HARD_SPELLINGS.length; i++) expect(refused[`hard${i}`]).toBe('adapter_category_hard_blocked');
    expect(readSidecar(graded).sidecar).toEqual(VALID_GRADED_SIDECAR);
  });

  it('parseSidecar (what the trainer writes through) refuses the same categories', () => {
    expect(parseSidecar({ category: 'vfx-gore' }).problems).toEqual(['sidecar category "vfx-gore" is not a category Redline knows (known: graphic-injury)']);
    expect(parseSidecar({ category: 'sexual-minors' }).problems[0]).toMatch(/hard-blocked category minors-sexual/);
    expect(parseSidecar({ category: 'graphic-injury' }).problems).toEqual([]);
  });
});

describe('the planner', () => {
  const policy = loadPolicy();
  const use = (sidecar: unknown) => ({ name: 'x', path: '/x.safetensors', te: 1, unet: 1, sidecar: sidecar as never });

  it('refuses a sidecar object with an unknown category instead of running the adapter at the tag weight', () => {
    const err = refusalOf(() => planGradedGeneration(policy, 1, 1, [use({ category: 'vfx-gore', intensity })], 7));
    expect(err.code).toBe('adapter_sidecar_invalid');
    expect(err.message).toMatch(/"vfx-gore" is not a category Redline knows \(known: graphic-injury\)/);
  });

  it('refuses a hard-blocked sidecar object outright', () => {
    expect(refusalOf(() => assertAdapterGradable('x', { category: 'sexual-minors' })).code).toBe('adapter_category_hard_blocked');
  });

  it('grades a graphic-injury adapter at the calibrated strength of the effective level', () => {
    expect(isGradedAdapter({ category: 'graphic-injury' })).toBe(true);
    expect(isGradedAdapter({})).toBe(false);
    const plan = planGradedGeneration(policy, 2, 2, [use(VALID_GRADED_SIDECAR)], 7);
    expect(plan.adapters).toEqual([{ path: '/x.safetensors', te: 0.6, unet: 0.6 }]);
  });
});
