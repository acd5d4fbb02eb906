// Safe Latent Diffusion guidance (Schramowski et al. 2023), computed exactly as diffusers'
// StableDiffusionPipelineSafe does per denoising step. The pipeline runs the UNet on three
// conditionings (unconditional, prompt, safety concept) and calls `step` with the three
// noise predictions; it returns the guided noise prediction that goes to the scheduler.
//
// Per element (diffusers, equations of the paper):
//   g      = text - uncond                                  (classifier-free guidance)
//   scale  = min(|text - concept| * sld_guidance_scale, 1)   (eq. 6)
//   scale  = 0 where text - concept >= sld_threshold          (eq. 6)
//   gs     = (concept - uncond) * scale                       (eq. 4)
//   gs     = gs + sld_momentum_scale * momentum               (eq. 7)
//   momentum = sld_mom_beta * momentum + (1 - sld_mom_beta) * gs   (eq. 8)
//   if step >= sld_warmup_steps: g = g - gs                   (eq. 3)
//   out    = uncond + guidance_scale * g
// Momentum builds up during warm-up too. SLD is off (plain CFG) when sld_guidance_scale <= 1.
// Unlike diffusers, a CFG scale <= 1 does not switch SLD off: a request field must never
// disable a safety layer. At CFG <= 1 the pipeline's prediction is the prompt's alone (the
// diffusers rule, w = 1), so SLD gives text - gs; with w < 1 in the formula the negative
// prompt would be mixed in as content, up to the negative prompt alone at CFG 0.
import { RedlineError } from '../errors.ts';
import type { Category } from './categories.ts';

export interface SldParams {
  sld_guidance_scale: number;
  sld_warmup_steps: number;
  sld_threshold: number;
  sld_momentum_scale: number;
  sld_mom_beta: number;
}

/** diffusers' SafetyConfig presets, unchanged. */
export const SLD_PRESETS = {
  WEAK: { sld_warmup_steps: 15, sld_guidance_scale: 20, sld_threshold: 0.0, sld_momentum_scale: 0.0, sld_mom_beta: 0.0 },
  MEDIUM: { sld_warmup_steps: 10, sld_guidance_scale: 1000, sld_threshold: 0.01, sld_momentum_scale: 0.3, sld_mom_beta: 0.4 },
  STRONG: { sld_warmup_steps: 7, sld_guidance_scale: 2000, sld_threshold: 0.025, sld_momentum_scale: 0.5, sld_mom_beta: 0.7 },
  MAX: { sld_warmup_steps: 0, sld_guidance_scale: 5000, sld_threshold: 1.0, sld_momentum_scale: 0.5, sld_mom_beta: 0.7 },
} as const satisfies Record<string, SldParams>;

export type SldPresetName = keyof typeof SLD_PRESETS;

/** diffusers' default safety concept (StableDiffusionPipelineSafe._safety_text_concept). */
export const DIFFUSERS_SAFETY_CONCEPT =
  'an image showing hate, harassment, violence, suffering, humiliation, harm, suicide, sexual, nudity, ' +
  'bodily fluids, blood, obscene gestures, illegal activity, drug use, theft, vandalism, weapons, child abuse, ' +
  'brutality, cruelty';

/**
 * The safety-concept text per category: what SLD steers away from. `graphic_injury` is the
 * one used when a graded request is clamped; the others back up refusals in pipelines that
 * generate anyway (e.g. a clamped batch).
 */
export const SLD_CONCEPTS: Record<Category, string> = {
  graphic_injury: 'an image showing blood, gore, wounds, injury, bleeding, mutilation, dismemberment, exposed flesh and bone, violence, brutality, suffering',
  sexual: 'an image showing nudity, sexual acts, genitals, exposed breasts, erotic poses, pornography',
  minors_sexual: 'an image showing a child, nudity, sexual content, child abuse',
  minors_graded: 'an image showing an injured child, blood, wounds, child abuse, violence against children',
  sexual_violence: 'an image showing sexual violence, rape, sexual assault, coercion, nudity, injury',
  real_person_graded: 'an image showing a real person injured, blood, wounds, violence',
  real_person_sexual: 'an image showing a real person nude, sexual content',
  extremist: 'an image showing extremist propaganda, hate symbols, swastikas, terrorist flags, glorified violence',
  self_harm_promotion: 'an image showing self-harm, suicide, cutting, scars from self-injury, nooses, eating disorders',
};

export function sldPreset(name: string): SldParams {
  const p = (SLD_PRESETS as Record<string, SldParams>)[name];
  if (!p) {
    throw new RedlineError('unknown_sld_preset', `Unknown Safe Latent Diffusion preset '${name}'.`,
      `Use one of ${Object.keys(SLD_PRESETS).join(', ')} or give the five sld_* parameters.`);
  }
  return { ...p };
}

/** Whether SLD steers: sld_guidance_scale > 1, whatever the CFG scale (see the header). */
export function sldEnabled(params: SldParams): boolean {
  return params.sld_guidance_scale > 1;
}

/**
 * Per-generation SLD state: holds the momentum between steps. One instance per image
 * batch; `step` must be called once per denoising step, in order, starting at 0.
 */
export class SafeLatentGuidance {
  private momentum: Float32Array | undefined;
  private nextStep = 0;

  constructor(readonly params: SldParams, readonly guidanceScale: number) {
    for (const [k, v] of Object.entries(params)) {
      if (!Number.isFinite(v)) throw new RedlineError('bad_sld_params', `SLD parameter ${k} must be a finite number, got ${v}.`);
    }
  }

  get enabled(): boolean {
    return sldEnabled(this.params);
  }

  /**
   * Combines the three noise predictions of step `step` into the guided prediction
   * (written to `out` if given, else a new array).
   */
  step(step: number, uncond: Float32Array, text: Float32Array, concept: Float32Array, out?: Float32Array): Float32Array {
    if (step !== this.nextStep) {
      throw new Error(`SafeLatentGuidance.step called for step ${step}, expected ${this.nextStep}`);
    }
    this.nextStep++;
    const n = uncond.length;
    if (text.length !== n || concept.length !== n) {
      throw new Error(`SLD: noise predictions differ in length (${n}, ${text.length}, ${concept.length})`);
    }
    const result = out ?? new Float32Array(n);
    // CFG <= 1 is no guidance: the prompt's prediction alone (u + 1 * (t - u)).
    const w = this.guidanceScale > 1 ? this.guidanceScale : 1;
    if (!this.enabled) {
      for (let i = 0; i < n; i++) result[i] = uncond[i]! + w * (text[i]! - uncond[i]!);
      return result;
    }
    const { sld_guidance_scale: sS, sld_threshold: lambda, sld_momentum_scale: sm, sld_mom_beta: beta, sld_warmup_steps: warmup } = this.params;
    const momentum = (this.momentum ??= new Float32Array(n));
    const apply = step >= warmup;
    for (let i = 0; i < n; i++) {
      const u = uncond[i]!;
      const t = text[i]!;
      const c = concept[i]!;
      let g = t - u;
      const diff = t - c;
      const scale = diff >= lambda ? 0 : Math.min(Math.abs(diff) * sS, 1);
      let gs = (c - u) * scale;
      gs = gs + sm * momentum[i]!;
      momentum[i] = beta * momentum[i]! + (1 - beta) * gs;
      if (apply) g = g - gs;
      result[i] = u + w * g;
    }
    return result;
  }
}
