// SLD in a hires fix's second pass. The second pass counts its steps from 0 again, so SLD's
// warm-up (the default policy's level 1 uses MEDIUM: 10 steps) covered a whole second pass of
// up to 10 steps and SLD never acted on the final image. The graded plan's hook steers the
// hires pass from its first step, with momentum started afresh.
import { describe, expect, it } from 'vitest';
import { Generator, type GuidanceHook } from '../../src/pipeline/generate.ts';
import type { StableDiffusionModel } from '../../src/pipeline/model.ts';
import { hiresSldParams, planGradedGeneration } from '../../src/safety/graded.ts';
import { loadPolicy } from '../../src/safety/policy/policy.ts';
import { SLD_PRESETS } from '../../src/safety/sld.ts';
import { useEmbeddedModel } from '../helpers/embedded-model.ts';

const policy = loadPolicy();
const CFG = 7;

/** Asked for level 3, clamped to 1: the default policy guides with SLD MEDIUM. */
function clampedPlan() {
  const plan = planGradedGeneration(policy, 3, 1, [], CFG);
  expect(plan.sld).toEqual(SLD_PRESETS.MEDIUM);
  expect(plan.cfgScale).toBe(CFG);
  return plan;
}

describe('the graded plan\'s SLD hook, worked by hand', () => {
  // Two elements. MEDIUM: sS 1000, threshold 0.01, momentum scale 0.3, beta 0.4, warm-up 10.
  // Element 0: text - concept = -0.1 < 0.01, scale = min(0.1 * 1000, 1) = 1, so
  //   gs = (concept - uncond) * 1 = 0.6 (+ 0.3 * momentum).
  // Element 1: text - concept = 0.1 >= 0.01, scale 0: SLD leaves it alone.
  const uncond = Float32Array.of(0, 0);
  const cond = Float32Array.of(0.5, 0.2);
  const concept = Float32Array.of(0.6, 0.1);
  const run = (hook: GuidanceHook, pass: 'first' | 'hires', step: number): number[] => {
    const out = new Float32Array(2);
    void hook.combine({ uncond, cond, concept, cfgScale: CFG, step, pass, out });
    return [...out];
  };

  it('first pass: inside the warm-up the prediction is plain CFG, u + 7 (t - u)', () => {
    const hook = clampedPlan().guidance()!;
    for (const step of [0, 1, 2]) {
      const [a, b] = run(hook, 'first', step);
      expect(a).toBeCloseTo(3.5, 5);
      expect(b).toBeCloseTo(1.4, 5);
    }
  });

  it('hires pass: steers from step 0, its momentum built from its own steps only', () => {
    const hook = clampedPlan().guidance()!;
    // a first pass of 12 steps: momentum builds there and must not leak into the hires pass
    for (let step = 0; step < 12; step++) run(hook, 'first', step);
    // hires step 0: momentum 0, gs = 0.6, g = 0.5 - 0.6 = -0.1, out = 7 * -0.1
    let [a, b] = run(hook, 'hires', 0);
    expect(a).toBeCloseTo(-0.7, 5);
    expect(b).toBeCloseTo(1.4, 5);
    // momentum = 0.4 * 0 + 0.6 * 0.6 = 0.36; hires step 1: gs = 0.6 + 0.3 * 0.36 = 0.708,
    // out = 7 * (0.5 - 0.708)
    [a, b] = run(hook, 'hires', 1);
    expect(a).toBeCloseTo(-1.456, 5);
    expect(b).toBeCloseTo(1.4, 5);
  });

  it('a second batch starts both passes afresh: warm-up again in its first pass, none in its hires pass', () => {
    const hook = clampedPlan().guidance()!;
    for (const pass of ['first', 'hires'] as const) for (let step = 0; step < 3; step++) run(hook, pass, step);
    expect(run(hook, 'first', 0)[0]).toBeCloseTo(3.5, 5);
    expect(run(hook, 'hires', 0)[0]).toBeCloseTo(-0.7, 5);
  });

  it('hiresSldParams keeps every parameter but the warm-up', () => {
    for (const preset of Object.values(SLD_PRESETS)) expect(hiresSldParams(preset)).toEqual({ ...preset, sld_warmup_steps: 0 });
  });
});

describe('through the pipeline (embedded model, hires fix)', () => {
  let model: StableDiffusionModel;
  useEmbeddedModel((m) => (model = m));

  it('the hook leaves the first pass as plain CFG during warm-up and steers every hires step', async () => {
    const inner = clampedPlan().guidance()!;
    // How far the hook's prediction is from plain CFG at each step the pipeline calls it for.
    const seen: Array<{ at: string; deviation: number }> = [];
    const hook: GuidanceHook = {
      conceptPrompt: inner.conceptPrompt,
      combine: async (args) => {
        await inner.combine(args);
        let deviation = 0;
        for (let i = 0; i < args.out.length; i++) deviation = Math.max(deviation, Math.abs(args.out[i]! - (args.uncond[i]! + CFG * (args.cond[i]! - args.uncond[i]!))));
        seen.push({ at: `${args.pass}:${args.step}`, deviation });
      },
    };
    await new Generator(model).generate(
      { prompt: 'a red circle on a white background', steps: 3, cfgScale: CFG, seed: 4321, width: 64, height: 64, rng: 'cpu', hires: { steps: 3, denoise: 0.5 } },
      { guidance: hook },
    );
    expect(seen.map((s) => s.at)).toEqual(['first:0', 'first:1', 'first:2', 'hires:0', 'hires:1', 'hires:2']);
    for (const s of seen.slice(0, 3)) expect(s.deviation, s.at).toBeLessThan(1e-4);
    for (const s of seen.slice(3)) expect(s.deviation, s.at).toBeGreaterThan(1e-2);
  }, 120_000);
});
