// The graded planner refuses adapters whose sidecar it cannot trust, at every level, and
// still clamps a valid graded adapter read from disk. Expected strengths are the sidecar
// values written here and the default policy's levels: inputs, not outputs of the planner.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readSidecar } from '../../src/adapters/registry.ts';
import type { IntensityLevel } from '../../src/safety/categories.ts';
import { planGradedGeneration } from '../../src/safety/graded.ts';
import { loadPolicy } from '../../src/safety/policy/policy.ts';
import { SLD_PRESETS } from '../../src/safety/sld.ts';
import { BROKEN_SIDECARS, VALID_GRADED_SIDECAR, writeAdapter, writeBrokenAdapters } from '../adapters/sidecar-fixtures.ts';
import { refusalOf } from '../helpers/errors.ts';

const policy = loadPolicy();
const dir = mkdtempSync(join(tmpdir(), 'redline-graded-refusal-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const LEVELS: IntensityLevel[] = [0, 1, 2, 3];

const use = (sidecar: unknown, te = 1, unet = 1) => ({ name: 'fx', path: join(dir, 'fx.safetensors'), te, unet, sidecar: sidecar as never });

describe('planGradedGeneration refuses an untrustworthy sidecar whatever the level', () => {
  const invalid: Array<[string, unknown, RegExp]> = [
    ['category of the wrong type', { category: 42, intensity: VALID_GRADED_SIDECAR.intensity }, /sidecar category must be/],
    ['strengths as text', { category: 'graphic-injury', intensity: { '1': '0.3', '2': '0.6', '3': '0.9' } }, /intensity level "1" needs a strength/],
    ['intensity as a list', { category: 'graphic-injury', intensity: [0.3, 0.6, 0.9] }, /intensity must map level names/],
    ['not an object', 'graphic-injury', /sidecar is not a JSON object/],
  ];
  for (const [what, sidecar, problem] of invalid) {
    it(`${what}: adapter_sidecar_invalid at levels 0-3`, () => {
      for (const level of LEVELS) {
        const err = refusalOf(() => planGradedGeneration(policy, level, level, [use(sidecar)], 7));
        expect(err.code).toBe('adapter_sidecar_invalid');
        expect(err.message).toMatch(/Adapter "fx" is refused: its sidecar fx\.json is invalid/);
        expect(err.message).toMatch(problem);
        expect(err.hint).toMatch(/Restore fx\.json/);
      }
    });
  }

  it('a graded sidecar that calibrates only some levels, or decreasing strengths: bad_calibration, with a hint', () => {
    for (const intensity of [{ '1': 0.3 }, { '1': 0.9, '2': 0.6, '3': 1 }, { '1': 0.3, '2': 0.6, '3': 3 }]) {
      for (const level of LEVELS) {
        const err = refusalOf(() => planGradedGeneration(policy, level, level, [use({ category: 'graphic-injury', intensity })], 7));
        expect(err.code).toBe('bad_calibration');
        expect(err.message).toMatch(/^fx\.json: /);
        expect(err.hint).toMatch(/refused until its sidecar calibrates levels 1, 2 and 3/);
      }
    }
  });
});

describe('adapters read from disk through the registry', () => {
  writeBrokenAdapters(dir);
  writeAdapter(dir, 'graded', VALID_GRADED_SIDECAR);

  it('a broken sidecar never reaches the planner: the read refuses it', () => {
    for (const c of BROKEN_SIDECARS) {
      const err = refusalOf(() => readSidecar(join(dir, `${c.name}.safetensors`)));
      expect(err.code).toBe('adapter_sidecar_invalid');
      expect(err.message).toMatch(c.problem);
    }
  });

  it('a valid graded adapter is still clamped: calibrated strength of the effective level, tag weight only lowers it', () => {
    const path = join(dir, 'graded.safetensors');
    const { sidecar } = readSidecar(path);
    const graded = { name: 'graded', path, te: 5, unet: 5, sidecar };
    const cal = VALID_GRADED_SIDECAR.intensity;
    expect(planGradedGeneration(policy, 3, 3, [graded], 7).adapters).toEqual([{ path, te: cal['3'], unet: cal['3'] }]);
    // asked for 3, capped at 1: level 1's strength and the policy's SLD for level 1
    const clamped = planGradedGeneration(policy, 3, 1, [graded], 7);
    expect(clamped.adapters).toEqual([{ path, te: cal['1'], unet: cal['1'] }]);
    expect(clamped.sld).toEqual(SLD_PRESETS[policy.categories.graphic_injury.levels[1].sldWhenClamped as keyof typeof SLD_PRESETS]);
    const half = planGradedGeneration(policy, 2, 2, [{ ...graded, te: 0.5, unet: 0.5 }], 7).adapters[0]!;
    expect(half.unet).toBeCloseTo(cal['2'] * 0.5, 12);
    expect(planGradedGeneration(policy, 0, 0, [graded], 7).adapters).toEqual([]);
  });
});
