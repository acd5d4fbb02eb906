// A1111's prompt editing, alternation and composable AND on the sampler side
// (modules/prompt_parser.py reconstruct_*_batch, modules/sd_samplers_cfg_denoiser.py):
// the prompt's AND parts and the negative prompt are scheduled for the requested number
// of steps; the denoiser counts its calls from 0 and at call i uses, in each schedule, the
// first text whose end step is >= i. That count starts at the first step actually run, so
// an img2img run (fewer steps) sees the early part of the schedule, as in A1111.
// The noise prediction is uncond + sum_k weight_k * cfg * (cond_k - uncond).
import type { EncodedPrompt } from '../text/conditioning.ts';
import { planNegativePrompt, planPositivePrompt } from '../text/prompt-plan.ts';
import type { ScheduledPrompt } from '../text/prompt-schedule.ts';
import type { PromptEncoder } from './prompt-encoder.ts';

export interface ScheduledConditioning {
  /** Last step (A1111's numbering) this encoding is used for. */
  endAtStep: number;
  encoded: EncodedPrompt;
}

export interface ConditioningPart {
  /** CFG weight of this AND part (1 for a prompt without AND or ":weight"). */
  weight: number;
  schedule: ScheduledConditioning[];
}

export interface PromptConditioning {
  parts: ConditioningPart[];
  negative: ScheduledConditioning[];
}

/** What the UNet runs on at one step and how its predictions combine. */
export interface StepConditioning {
  uncond: EncodedPrompt;
  /** Distinct positive conditionings of this step, padded to one token length. */
  conds: EncodedPrompt[];
  /** Per AND part: the index into `conds` and its weight. */
  parts: { cond: number; weight: number }[];
  /** A1111's pad_cond_uncond lengthened the prompt's or the negative prompt's conditioning at this call. */
  padded: boolean;
}

async function encodeSchedule(encoder: PromptEncoder, schedule: ScheduledPrompt[], clipSkip: number): Promise<ScheduledConditioning[]> {
  const encoded = await encoder.encodeSchedule(schedule.map((s) => s.prompt), clipSkip);
  return schedule.map((s, i) => ({ endAtStep: s.endAtStep, encoded: encoded[i]! }));
}

/**
 * Encodes a prompt and negative prompt (extra-network tags already removed) for `steps`
 * sampling steps. AND parts with the same text share one schedule (A1111's flat prompt
 * list); each schedule's texts are encoded together, each distinct row once.
 */
export async function encodePromptConditioning(
  encoder: PromptEncoder,
  prompt: string,
  negativePrompt: string,
  steps: number,
  clipSkip: number,
  /** Set for a hires fix's second pass: the first pass's steps, where its timeline starts. */
  firstPassSteps?: number,
): Promise<PromptConditioning> {
  const { parts } = planPositivePrompt(prompt, steps, firstPassSteps);
  const byText = new Map<string, Promise<ScheduledConditioning[]>>();
  const schedules = await Promise.all(parts.map((p) => {
    const key = p.schedule.map((s) => `${s.endAtStep}\u0000${s.prompt}`).join('\u0001');
    let s = byText.get(key);
    if (!s) {
      s = encodeSchedule(encoder, p.schedule, clipSkip);
      byText.set(key, s);
    }
    return s;
  }));
  const negative = await encodeSchedule(encoder, planNegativePrompt(negativePrompt, steps, firstPassSteps), clipSkip);
  return { parts: parts.map((p, i) => ({ weight: p.weight, schedule: schedules[i]! })), negative };
}

/** A1111's choice in a schedule at denoiser call `step` (from 0): the first entry whose
 * end step is >= step (so the first text also runs at call endAtStep). */
function entryAt(schedule: ScheduledConditioning[], step: number): EncodedPrompt {
  return (schedule.find((s) => step <= s.endAtStep) ?? schedule[0]!).encoded;
}

/**
 * Pads a conditioning to `tokens` positions by repeating its last token vector, as A1111
 * stacks AND parts of different lengths (prompt_parser.stack_conds).
 */
export function padToTokens(e: EncodedPrompt, tokens: number, width: number): EncodedPrompt {
  if (e.tokens === tokens) return e;
  const states = new Float32Array(tokens * width);
  states.set(e.states);
  const last = e.states.subarray((e.tokens - 1) * width, e.tokens * width);
  for (let t = e.tokens; t < tokens; t++) states.set(last, t * width);
  return { states, tokens };
}

/** A conditioning with `repeats` copies of `empty` appended (A1111's pad_cond). */
export function appendEmptyChunks(e: EncodedPrompt, repeats: number, empty: EncodedPrompt): EncodedPrompt {
  const states = new Float32Array(e.states.length + repeats * empty.states.length);
  states.set(e.states);
  for (let r = 0; r < repeats; r++) states.set(empty.states, e.states.length + r * empty.states.length);
  return { states, tokens: e.tokens + repeats * empty.tokens };
}

/** `make` cached by (conditioning, count): the steps that share a conditioning share its lengthened copy. */
function memoised(make: (e: EncodedPrompt, n: number) => EncodedPrompt): (e: EncodedPrompt, n: number) => EncodedPrompt {
  const cache = new Map<EncodedPrompt, Map<number, EncodedPrompt>>();
  return (e, n) => {
    let byCount = cache.get(e);
    if (!byCount) cache.set(e, (byCount = new Map()));
    let made = byCount.get(n);
    if (!made) byCount.set(n, (made = make(e, n)));
    return made;
  };
}

/**
 * The conditionings for every denoiser call 0..calls-1, computed once per generation.
 * With `padWith` (A1111's pad_cond_uncond, the empty prompt's encoding) the shorter of the
 * prompt's conditionings (already one length) and the negative prompt's gets
 * (longer - shorter) // padWith.tokens copies of it appended, so both run in one UNet
 * batch; the extra tokens change what cross-attention sees, hence the image.
 */
export function stepConditionings(c: PromptConditioning, calls: number, width: number, padWith: EncodedPrompt | null = null): StepConditioning[] {
  const pad = memoised((e, tokens) => padToTokens(e, tokens, width));
  const append = memoised((e, repeats) => appendEmptyChunks(e, repeats, padWith!));
  return Array.from({ length: calls }, (_, step) => {
    const chosen = c.parts.map((p) => entryAt(p.schedule, step));
    const distinct = [...new Set(chosen)];
    const tokens = Math.max(...distinct.map((e) => e.tokens));
    let uncond = entryAt(c.negative, step);
    let conds = distinct.map((e) => pad(e, tokens));
    let padded = false;
    if (padWith && tokens !== uncond.tokens) {
      // Python's floor division, as A1111 writes it; the lengths are whole chunks.
      const repeats = Math.floor((tokens - uncond.tokens) / padWith.tokens);
      if (repeats < 0) conds = conds.map((e) => append(e, -repeats));
      else if (repeats > 0) uncond = append(uncond, repeats);
      padded = repeats !== 0;
    }
    return {
      uncond,
      conds,
      parts: c.parts.map((p, k) => ({ cond: distinct.indexOf(chosen[k]!), weight: p.weight })),
      padded,
    };
  });
}

/** Whether a step is plain classifier-free guidance: one part of weight 1. */
export function isPlainGuidance(s: StepConditioning): boolean {
  return s.parts.length === 1 && s.parts[0]!.weight === 1;
}

/**
 * uncond + sum_k weight_k * cfgScale * (cond_k - uncond) per element, in float64 and
 * rounded once; for a plain prompt exactly uncond + cfgScale * (cond - uncond).
 */
export function composeGuidance(uncond: Float32Array, conds: Float32Array[], s: StepConditioning, cfgScale: number, out: Float32Array): void {
  const scales = s.parts.map((p) => p.weight * cfgScale);
  const preds = s.parts.map((p) => conds[p.cond]!);
  for (let q = 0; q < out.length; q++) {
    const u = uncond[q]!;
    let acc = u;
    for (let k = 0; k < preds.length; k++) acc += scales[k]! * (preds[k]![q]! - u);
    out[q] = acc;
  }
}

/**
 * The single "cond" prediction that gives the AND combination under plain CFG:
 * uncond + sum_k weight_k * (cond_k - uncond). Guidance hooks (Safe Latent Diffusion)
 * receive it in place of the prompt's prediction; for a plain prompt it is that prediction.
 */
export function effectiveCond(uncond: Float32Array, conds: Float32Array[], s: StepConditioning): Float32Array {
  if (isPlainGuidance(s)) return conds[s.parts[0]!.cond]!;
  const out = new Float32Array(uncond.length);
  composeGuidance(uncond, conds, s, 1, out);
  return out;
}
