// Graded intensity applied to a generation, shared by every interface (service backend and
// CLI) so the same policy gives the same image whichever door a request came in by: graded
// adapters (sidecar category graphic-injury) run at the strength the policy, or the
// adapter's calibration, gives the effective level, and a user's weight can only lower it;
// the level's CFG ceiling applies; and a request clamped below what it asked for gets Safe
// Latent Diffusion guidance away from the graphic concept.
import { type AdapterSidecar, hardBlockedSidecarCategory, parseSidecar } from '../adapters/registry.ts';
import { cleanText } from '../adapters/text.ts';
import { RedlineError } from '../errors.ts';
import type { AdapterRequest, GuidanceHook } from '../pipeline/generate.ts';
import { type IntensityLevel, isGradedAdapterCategory } from './categories.ts';
import { calibrationFromSidecar, generationSettings, type Policy } from './policy/policy.ts';
import { SafeLatentGuidance, SLD_CONCEPTS, type SldParams } from './sld.ts';

export interface AdapterUse {
  name: string;
  path: string;
  /** The weights the prompt's <lora:name:te:unet> tag gives (both w for <lora:name:w>). */
  te: number;
  unet: number;
  sidecar: AdapterSidecar | null;
}

export interface GradedPlan {
  adapters: AdapterRequest[];
  cfgScale: number;
  sld: SldParams | undefined;
  /** An SLD guidance hook, or undefined when none applies. Its momentum starts afresh at
   * step 0 of every pass, so one hook serves a run of several batches. A hires fix's second
   * pass is steered from its first step (see hiresSldParams). */
  guidance(): GuidanceHook | undefined;
}

export function isGradedAdapter(sidecar: AdapterSidecar | null | undefined): boolean {
  return isGradedAdapterCategory(sidecar?.category);
}

/**
 * Throws the RedlineError that refuses an adapter whose sidecar the planner cannot trust:
 * a sidecar object that does not validate (the registry's readSidecar refuses such files;
 * this guards callers that build the object some other way), or a graded adapter whose
 * calibration does not give levels 1-3 a non-decreasing strength in 0..2.
 */
export function assertAdapterGradable(name: string, sidecar: unknown): void {
  if (sidecar === null || sidecar === undefined) return;
  const category = typeof sidecar === 'object' ? (sidecar as { category?: unknown }).category : undefined;
  const blocked = typeof category === 'string' ? hardBlockedSidecarCategory(category) : null;
  if (blocked) {
    throw new RedlineError('adapter_category_hard_blocked',
      `Adapter "${name}" is refused: its sidecar ${name}.json declares the category "${cleanText(category as string, 40)}", the hard-blocked category ${blocked}. No policy, role or request allows it.`,
      'Remove the adapter: Redline does not run adapters made for hard-blocked content.');
  }
  const { problems } = parseSidecar(sidecar);
  if (problems.length) {
    throw new RedlineError('adapter_sidecar_invalid',
      `Adapter "${name}" is refused: its sidecar ${name}.json is invalid: ${problems.join('; ')}.`,
      `Restore ${name}.json from the adapter's release (or re-run its calibration).`);
  }
  if (isGradedAdapter(sidecar as AdapterSidecar)) calibrationFromSidecar(sidecar, `${name}.json`);
}

/**
 * SLD for a hires fix's second pass. SLD's warm-up lets the first pass form the composition
 * before steering it; the second pass starts from that composition, and counts its steps from
 * 0 again, so a warm-up there (MEDIUM's 10 steps, WEAK's 15) would cover a typical second pass
 * of 10-15 steps entirely and SLD would never act on the final image. It steers from the
 * second pass's first step instead. Its momentum starts at zero: the first pass's is of a
 * smaller latent, and its steps are of another schedule. With no warm-up, momentum only
 * accumulates from steering steps, as in diffusers' own MAX preset (warm-up 0).
 */
export function hiresSldParams(sld: SldParams): SldParams {
  return { ...sld, sld_warmup_steps: 0 };
}

export function planGradedGeneration(policy: Policy, requested: IntensityLevel, effective: IntensityLevel, uses: readonly AdapterUse[], cfgScale: number): GradedPlan {
  // Every adapter is checked before any runs, whatever the level: a refusal must not depend
  // on which level a prompt happened to ask for.
  for (const use of uses) assertAdapterGradable(use.name, use.sidecar);
  const asked = Math.max(requested, effective) as IntensityLevel;
  const base = generationSettings(policy, asked, effective);
  const cfg = base.cfgScaleMax !== undefined ? Math.min(cfgScale, base.cfgScaleMax) : cfgScale;
  const adapters: AdapterRequest[] = [];
  const unit = (w: number): number => Math.max(0, Math.min(1, w));
  for (const use of uses) {
    let { te, unet } = use;
    if (isGradedAdapter(use.sidecar)) {
      const s = generationSettings(policy, asked, effective, calibrationFromSidecar(use.sidecar, `${use.name}.json`)).adapterStrength;
      te = s * unit(te);
      unet = s * unit(unet);
    }
    if (te !== 0 || unet !== 0) adapters.push({ path: use.path, te, unet });
  }
  const sld = base.sld;
  return {
    adapters,
    cfgScale: cfg,
    sld,
    guidance() {
      if (!sld) return undefined;
      const hires = hiresSldParams(sld);
      let state: SafeLatentGuidance | undefined;
      return {
        conceptPrompt: SLD_CONCEPTS.graphic_injury,
        combine: ({ uncond, cond, concept, step, pass, out }) => {
          if (step === 0 || !state) state = new SafeLatentGuidance(pass === 'hires' ? hires : sld, cfg);
          state.step(step, uncond, cond, concept!, out);
        },
      };
    },
  };
}
