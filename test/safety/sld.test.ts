import { describe, expect, it } from 'vitest';
import { SafeLatentGuidance, SLD_PRESETS, sldPreset, type SldParams } from '../../src/safety/sld.ts';

// Expected values are worked out by hand from the per-step update in diffusers'
// StableDiffusionPipelineSafe.__call__ (eq. 3-8 of the SLD paper):
//   scale = clamp(|text - concept| * sS, max=1); scale = 0 where text - concept >= lambda
//   gs = (concept - uncond) * scale + sm * momentum; momentum = beta * momentum + (1 - beta) * gs
//   if step >= warmup: g = (text - uncond) - gs; out = uncond + w * g
const params: SldParams = { sld_guidance_scale: 10, sld_warmup_steps: 1, sld_threshold: 0.01, sld_momentum_scale: 0.5, sld_mom_beta: 0.4 };
const uncond = Float32Array.from([0.1, -0.2, 0]);
const text = Float32Array.from([0.3, 0.1, 0]);
const concept = Float32Array.from([0.35, 0.0, 0.5]);

describe('Safe Latent Diffusion guidance', () => {
  it('matches the diffusers update, step by step, including momentum built during warm-up', () => {
    const sld = new SafeLatentGuidance(params, 7.5);
    expect(sld.enabled).toBe(true);
    // Step 0 (warm-up): plain CFG out; momentum = 0.6 * gs = [0.075, 0, 0.3].
    //   e0: diff -0.05 -> scale 0.5, gs 0.125. e1: diff 0.1 >= 0.01 -> scale 0. e2: diff -0.5 -> scale clamped to 1, gs 0.5.
    const s0 = sld.step(0, uncond, text, concept);
    expect(s0[0]).toBeCloseTo(1.6, 5);
    expect(s0[1]).toBeCloseTo(2.05, 5);
    expect(s0[2]).toBeCloseTo(0, 5);
    // Step 1: e0 gs = 0.125 + 0.5 * 0.075 = 0.1625, g = 0.2 - 0.1625 = 0.0375, out = 0.1 + 7.5 * 0.0375.
    //         e2 gs = 0.5 + 0.5 * 0.3 = 0.65, out = 7.5 * -0.65.
    const s1 = sld.step(1, uncond, text, concept);
    expect(s1[0]).toBeCloseTo(0.38125, 5);
    expect(s1[1]).toBeCloseTo(2.05, 5);
    expect(s1[2]).toBeCloseTo(-4.875, 5);
    // Step 2: momentum after step 1 = [0.4*0.075 + 0.6*0.1625, 0, 0.4*0.3 + 0.6*0.65] = [0.1275, 0, 0.51].
    //         e0 gs = 0.125 + 0.5 * 0.1275 = 0.18875, out = 0.1 + 7.5 * (0.2 - 0.18875).
    const s2 = sld.step(2, uncond, text, concept);
    expect(s2[0]).toBeCloseTo(0.1 + 7.5 * (0.2 - 0.18875), 5);
    expect(s2[2]).toBeCloseTo(7.5 * -(0.5 + 0.5 * 0.51), 5);
  });

  it('is plain classifier-free guidance when sld_guidance_scale <= 1 (as diffusers)', () => {
    const off = new SafeLatentGuidance({ ...params, sld_guidance_scale: 1 }, 7.5);
    expect(off.enabled).toBe(false);
    const out = off.step(0, uncond, text, concept);
    expect(Array.from(out)).toEqual(Array.from(uncond, (u, i) => Math.fround(u + 7.5 * (text[i]! - u))));
  });

  // diffusers switches SLD off at CFG <= 1; here a request's CFG must not switch off a
  // safety layer, and CFG <= 1 means the prompt's prediction alone (never the negative
  // prompt's, which CFG 0 in the u + w * g formula would give).
  it.each([1, 0.5, 0])('still steers at CFG %s, from the prompt prediction alone', (cfg) => {
    const sld = new SafeLatentGuidance({ ...params, sld_warmup_steps: 0, sld_momentum_scale: 0 }, cfg);
    expect(sld.enabled).toBe(true);
    // gs = (concept - uncond) * scale: e0 scale 0.5 -> 0.125; e1 scale 0 -> 0; e2 scale 1 -> 0.5. out = text - gs.
    const out = sld.step(0, uncond, text, concept);
    expect(out[0]).toBeCloseTo(0.3 - 0.125, 6);
    expect(out[1]).toBeCloseTo(0.1, 6);
    expect(out[2]).toBeCloseTo(-0.5, 6);
  });

  it('MAX applies from step 0 and the presets are diffusers SafetyConfig values', () => {
    expect(SLD_PRESETS).toEqual({
      WEAK: { sld_warmup_steps: 15, sld_guidance_scale: 20, sld_threshold: 0.0, sld_momentum_scale: 0.0, sld_mom_beta: 0.0 },
      MEDIUM: { sld_warmup_steps: 10, sld_guidance_scale: 1000, sld_threshold: 0.01, sld_momentum_scale: 0.3, sld_mom_beta: 0.4 },
      STRONG: { sld_warmup_steps: 7, sld_guidance_scale: 2000, sld_threshold: 0.025, sld_momentum_scale: 0.5, sld_mom_beta: 0.7 },
      MAX: { sld_warmup_steps: 0, sld_guidance_scale: 5000, sld_threshold: 1.0, sld_momentum_scale: 0.5, sld_mom_beta: 0.7 },
    });
    const max = new SafeLatentGuidance(sldPreset('MAX'), 7.5);
    // e0: diff -0.05 < 1 -> scale min(0.05 * 5000, 1) = 1, gs = 0.25; e1: diff 0.1 < 1 -> scale 1, gs = 0.2.
    const out = max.step(0, uncond, text, concept);
    expect(out[0]).toBeCloseTo(0.1 + 7.5 * (0.2 - 0.25), 5);
    expect(out[1]).toBeCloseTo(-0.2 + 7.5 * (0.3 - 0.2), 5);
  });

  it('refuses out-of-order steps, mismatched lengths and unknown presets', () => {
    const sld = new SafeLatentGuidance(params, 7.5);
    expect(() => sld.step(1, uncond, text, concept)).toThrow(/expected 0/);
    expect(() => new SafeLatentGuidance(params, 7.5).step(0, uncond, text, new Float32Array(2))).toThrow(/length/);
    expect(() => sldPreset('EXTREME')).toThrow(/WEAK, MEDIUM, STRONG, MAX/);
  });
});
