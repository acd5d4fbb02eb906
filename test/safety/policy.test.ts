import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

// Policy documents are mutated freely to build invalid variants.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type PolicyDoc = Record<string, any>;
import { RedlineError } from '../../src/errors.ts';
import { HARD_BLOCKED_CATEGORIES } from '../../src/safety/categories.ts';
import {
  calibrationFromSidecar, defaultPolicy, generationSettings, loadPolicy, parsePolicy, roleOf,
} from '../../src/safety/policy/policy.ts';
import { SLD_PRESETS } from '../../src/safety/sld.ts';

function doc(): PolicyDoc {
  const { source: _s, ...d } = defaultPolicy() as unknown as PolicyDoc;
  return structuredClone(d);
}
const parse = (d: unknown) => parsePolicy(JSON.stringify(d), 'test.json');
function errorOf(f: () => unknown): RedlineError {
  try {
    f();
  } catch (e) {
    if (e instanceof RedlineError) return e;
    throw e;
  }
  throw new Error('expected a RedlineError');
}

describe('default policy', () => {
  it('loads, with sexual content off, the four roles and the documented thresholds', () => {
    const p = defaultPolicy();
    expect(p.categories.sexual.enabled).toBe(false);
    expect(Object.keys(p.roles).sort()).toEqual(['admin', 'creator', 'studio', 'viewer']);
    expect(p.roles.viewer!.maxIntensity).toBe(0);
    expect(p.outputChecks.minFaceAge).toBe(25);
    expect(p.outputChecks.nsfw.action).toBe('block');
    expect(p.categories.graphic_injury.levels.map((l) => l.level)).toEqual([0, 1, 2, 3]);
    expect(p.audit.promptStorage).toBe('text');
  });

  it('round-trips through YAML and JSON files', () => {
    const dir = mkdtempSync(join(tmpdir(), 'redline-policy-'));
    const json = join(dir, 'p.json');
    writeFileSync(json, JSON.stringify(doc()));
    expect(loadPolicy(json).roles).toEqual(defaultPolicy().roles);
    const yaml = join(dir, 'p.yaml');
    writeFileSync(yaml, 'version: 1\ncategories: {sexual: {enabled: false}, graphic_injury: {levels: [{level: 0, adapterStrength: 0, sldWhenClamped: MAX}, {level: 1, adapterStrength: 0.2, sldWhenClamped: MEDIUM}, {level: 2, adapterStrength: 0.5, sldWhenClamped: WEAK}, {level: 3, adapterStrength: 0.8, sldWhenClamped: "off"}]}}\nroles: {viewer: {maxIntensity: 0}, creator: {maxIntensity: 1}, studio: {maxIntensity: 2}, admin: {maxIntensity: 3}}\nsemantic: {enabled: false, thresholds: {}}\noutputChecks: {nsfw: {thresholds: {porn: 0.5, hentai: 0.5, sexy: 0.9}, action: blur}, likeness: {cosineThreshold: 0.7}}\naudit: {promptStorage: hash}\n');
    const p = loadPolicy(yaml);
    expect(p.roles.creator!.maxIntensity).toBe(1);
    expect(p.outputChecks.minFaceAge).toBe(25);
    expect(p.outputChecks.nsfw.action).toBe('blur');
    expect(p.audit).toEqual({ promptStorage: 'hash', saltEnv: 'REDLINE_AUDIT_SALT' });
  });
});

describe('hard-blocked categories', () => {
  for (const category of HARD_BLOCKED_CATEGORIES) {
    it(`a policy enabling ${category} fails to load, naming the field`, () => {
      const d = doc();
      d.categories[category] = { enabled: true };
      const e = errorOf(() => parse(d));
      expect(e.code).toBe('bad_policy');
      expect(e.message).toContain(`policy.categories.${category}`);
      expect(e.message).toMatch(/hard-blocked/);
    });
  }

  it('restating a hard block as disabled is accepted; any other setting is not', () => {
    const d = doc();
    d.categories.extremist = { enabled: false };
    expect(() => parse(d)).not.toThrow();
    d.categories.extremist = { threshold: 0.9 };
    expect(errorOf(() => parse(d)).message).toContain('policy.categories.extremist');
    d.categories.extremist = true;
    expect(errorOf(() => parse(d)).message).toContain('policy.categories.extremist');
  });

  it('no role field can lift a hard block', () => {
    const d = doc();
    d.roles.admin.allow = ['minors_sexual'];
    expect(errorOf(() => parse(d)).message).toContain('policy.roles.admin.allow: unknown field');
  });
});

describe('validation errors name the path of the bad field', () => {
  const cases: [string, (d: PolicyDoc) => void, RegExp][] = [
    ['version', (d) => { d.version = 2; }, /policy\.version: expected 1/],
    ['unknown top-level field', (d) => { d.colour = 'red'; }, /policy\.colour: unknown field/],
    ['cap out of range', (d) => { d.roles.creator.maxIntensity = 5; }, /policy\.roles\.creator\.maxIntensity: 5 is outside 0\.\.3/],
    ['cap not whole', (d) => { d.roles.creator.maxIntensity = 1.5; }, /policy\.roles\.creator\.maxIntensity: expected a whole number/],
    ['missing role', (d) => { delete d.roles.viewer; }, /policy\.roles\.viewer: missing/],
    ['sexual role without the category', (d) => { d.roles.studio.sexual = true; }, /policy\.roles\.studio\.sexual/],
    ['level count', (d) => { d.categories.graphic_injury.levels.pop(); }, /graphic_injury\.levels: expected a list of 4 levels/],
    ['level order', (d) => { d.categories.graphic_injury.levels[2].level = 3; }, /levels\[2\]\.level: expected 2/],
    ['strength type', (d) => { d.categories.graphic_injury.levels[1].adapterStrength = 'high'; }, /levels\[1\]\.adapterStrength: expected a number/],
    ['decreasing strength', (d) => { d.categories.graphic_injury.levels[3].adapterStrength = 0.1; }, /levels\[3\]\.adapterStrength: strengths must not decrease/],
    ['level 0 strength', (d) => { d.categories.graphic_injury.levels[0].adapterStrength = 0.1; }, /levels\[0\]\.adapterStrength/],
    ['sld preset', (d) => { d.categories.graphic_injury.levels[0].sldWhenClamped = 'HUGE'; }, /levels\[0\]\.sldWhenClamped: expected one of off, WEAK, MEDIUM, STRONG, MAX/],
    ['sld params', (d) => { d.categories.graphic_injury.levels[0].sldWhenClamped = { sld_guidance_scale: 10 }; }, /sldWhenClamped\.sld_warmup_steps: missing/],
    ['nsfw action', (d) => { d.outputChecks.nsfw.action = 'hide'; }, /policy\.outputChecks\.nsfw\.action: expected one of block, blur/],
    ['face age', (d) => { d.outputChecks.minFaceAge = 12; }, /policy\.outputChecks\.minFaceAge: 12 is outside 18\.\.100/],
    ['likeness threshold', (d) => { d.outputChecks.likeness.cosineThreshold = 2; }, /likeness\.cosineThreshold: 2 is outside 0\.\.1/],
    ['semantic threshold', (d) => { d.semantic.thresholds.sexual = 'x'; }, /policy\.semantic\.thresholds\.sexual: expected a number/],
    ['semantic category', (d) => { d.semantic.thresholds.gore = 0.5; }, /policy\.semantic\.thresholds\.gore: unknown field/],
    ['prompt storage', (d) => { d.audit.promptStorage = 'plain'; }, /policy\.audit\.promptStorage: expected one of text, hash/],
    ['protected person', (d) => { d.protectedPersons = [{ name: '' }]; }, /policy\.protectedPersons\[0\]\.name: expected a non-empty string/],
  ];
  for (const [what, mutate, message] of cases) {
    it(what, () => {
      const d = doc();
      mutate(d);
      expect(errorOf(() => parse(d)).message).toMatch(message);
    });
  }

  it('reports YAML syntax errors with the line', () => {
    expect(errorOf(() => parsePolicy('version: 1\nroles: [unclosed\n', 'broken.yaml')).message).toMatch(/broken\.yaml: not valid YAML\/JSON at line/);
  });

  it('reports a missing file and an unknown role clearly', () => {
    expect(errorOf(() => loadPolicy('/nonexistent/policy.yaml')).code).toBe('policy_unreadable');
    expect(errorOf(() => roleOf(defaultPolicy(), 'guest')).message).toMatch(/Unknown role 'guest'.*viewer, creator, studio, admin/);
  });
});

describe('generation settings per level', () => {
  it('uses the policy strength, or the adapter calibration when present', () => {
    const p = defaultPolicy();
    expect(generationSettings(p, 2, 2)).toEqual({ effectiveIntensity: 2, adapterStrength: 0.7, strengthSource: 'policy' });
    const cal = calibrationFromSidecar({ category: 'graphic-injury', intensity: { 1: 0.25, 2: 0.55, 3: 0.9 } });
    expect(generationSettings(p, 2, 2, cal)).toMatchObject({ adapterStrength: 0.55, strengthSource: 'calibration' });
    expect(generationSettings(p, 0, 0, cal).adapterStrength).toBe(0);
  });

  it('adds the level\'s SLD preset when the request was clamped', () => {
    const p = defaultPolicy();
    expect(generationSettings(p, 3, 0).sld).toEqual(SLD_PRESETS.STRONG);
    expect(generationSettings(p, 3, 1).sld).toEqual(SLD_PRESETS.MEDIUM);
    expect(generationSettings(p, 3, 2).sld).toEqual(SLD_PRESETS.WEAK);
    expect(generationSettings(p, 1, 1).sld).toBeUndefined();
  });

  it('rejects malformed calibration sidecars', () => {
    expect(calibrationFromSidecar({ name: 'x' })).toBeUndefined();
    expect(errorOf(() => calibrationFromSidecar({ intensity: { 1: 0.2, 2: 'a', 3: 1 } })).message).toMatch(/intensity\.2/);
    expect(errorOf(() => calibrationFromSidecar({ intensity: { 1: 0.9, 2: 0.5, 3: 1 } })).message).toMatch(/must not decrease/);
  });
});
