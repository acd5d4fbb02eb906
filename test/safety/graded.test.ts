// Graded intensity as both interfaces apply it (src/safety/graded.ts): expected strengths,
// ceilings and SLD presets are read from the policy text and the sidecar given here, which
// are the inputs, not from the code under test.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { planGradedGeneration } from '../../src/safety/graded.ts';
import { loadPolicy, parsePolicy } from '../../src/safety/policy/policy.ts';
import { SafeLatentGuidance, SLD_PRESETS } from '../../src/safety/sld.ts';

const policy = loadPolicy();
const graded = { name: 'splatter', path: '/x/splatter.safetensors', te: 1, unet: 1, sidecar: { category: 'graphic-injury', intensity: { '0': 0, '1': 0.3, '2': 0.6, '3': 0.9 } } };
const plain = { name: 'style', path: '/x/style.safetensors', te: 0.8, unet: 0.5, sidecar: null };

describe('planGradedGeneration', () => {
  it('runs a graded adapter at its calibrated strength for the effective level; the tag weight can only lower it', () => {
    expect(planGradedGeneration(policy, 2, 2, [graded], 7).adapters).toEqual([{ path: graded.path, te: 0.6, unet: 0.6 }]);
    expect(planGradedGeneration(policy, 1, 1, [graded], 7).adapters).toEqual([{ path: graded.path, te: 0.3, unet: 0.3 }]);
    expect(planGradedGeneration(policy, 2, 2, [{ ...graded, te: 5, unet: 5 }], 7).adapters).toEqual([{ path: graded.path, te: 0.6, unet: 0.6 }]);
    const half = planGradedGeneration(policy, 3, 3, [{ ...graded, te: 0.5, unet: 0.5 }], 7).adapters[0]!;
    expect(half.unet).toBeCloseTo(0.45, 12);
    // level 0: the adapter does not run at all
    expect(planGradedGeneration(policy, 0, 0, [graded], 7).adapters).toEqual([]);
  });

  it('uses the policy strengths when the adapter has no calibration, and passes other adapters through', () => {
    const uncalibrated = { ...graded, sidecar: { category: 'graphic-injury' } };
    const plan = planGradedGeneration(policy, 2, 2, [uncalibrated, plain], 7);
    expect(plan.adapters).toEqual([
      { path: graded.path, te: policy.categories.graphic_injury.levels[2].adapterStrength, unet: policy.categories.graphic_injury.levels[2].adapterStrength },
      { path: plain.path, te: 0.8, unet: 0.5 },
    ]);
  });

  it('adds SLD with the policy preset of the effective level only when the prompt was clamped', () => {
    expect(planGradedGeneration(policy, 2, 2, [graded], 7).guidance()).toBeUndefined();
    const clamped = planGradedGeneration(policy, 3, 2, [graded], 7);
    expect(policy.categories.graphic_injury.levels[2].sldWhenClamped).toBe('WEAK');
    expect(clamped.sld).toEqual(SLD_PRESETS.WEAK);
    expect(clamped.adapters[0]!.unet).toBe(0.6);
    expect(clamped.guidance()?.conceptPrompt).toMatch(/blood/);
  });

  it('caps CFG at the level ceiling a policy sets', () => {
    // the default policy with a CFG ceiling added at level 1
    const text = readFileSync(new URL('../../src/safety/policy/default-policy.yaml', import.meta.url), 'utf8')
      .replace(/(- level: 1[^\n]*\n)/, '$1        cfgScaleMax: 6\n');
    expect(text).toContain('cfgScaleMax: 6');
    const capped = parsePolicy(text, 'test');
    expect(planGradedGeneration(capped, 1, 1, [], 9).cfgScale).toBe(6);
    expect(planGradedGeneration(capped, 1, 1, [], 5).cfgScale).toBe(5);
    expect(planGradedGeneration(capped, 2, 2, [], 9).cfgScale).toBe(9);
  });

  it('one guidance hook serves several batches: its SLD momentum restarts at step 0', () => {
    const plan = planGradedGeneration(policy, 3, 1, [graded], 7);
    const hook = plan.guidance()!;
    const n = 8;
    const vec = (k: number): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(i + k));
    const run = (h: { combine: (a: never) => unknown }, steps: number): Float32Array[] => {
      const outs: Float32Array[] = [];
      for (let step = 0; step < steps; step++) {
        const out = new Float32Array(n);
        h.combine({ uncond: vec(step), cond: vec(step + 1), concept: vec(step + 2), cfgScale: 7, step, out } as never);
        outs.push(out);
      }
      return outs;
    };
    const first = run(hook as never, 15);
    const second = run(hook as never, 15);
    expect(second).toEqual(first);
    // and it is the algorithm itself, step for step
    const ref = new SafeLatentGuidance(plan.sld!, 7);
    for (let step = 0; step < 15; step++) expect(first[step]).toEqual(ref.step(step, vec(step), vec(step + 1), vec(step + 2)));
  });
});
