// The order in which A1111 turns a prompt into conditioning (modules/processing.py):
// positive prompt -> extra-network tags removed (parse_prompts) -> AND parts with weights
// (get_multicond_prompt_list) -> per-step schedule of each part; the negative prompt is
// only scheduled (get_learned_conditioning): A1111 neither splits it at AND nor removes
// <lora:...> tags from it. Each scheduled text then goes to batchPromptChunks.
import { extractExtraNetworks, parseSubPrompts, type ExtraNetworkTag, type LoraTag } from './prompt-parser.ts';
import { promptSchedule, type ScheduledPrompt } from './prompt-schedule.ts';

export interface PromptPart {
  /** CFG weight of this part: uncond + sum(weight * cfg * (cond_part - uncond)). */
  weight: number;
  /** Texts over the sampling steps; encode them together (one batch) for A1111's emphasis. */
  schedule: ScheduledPrompt[];
}

export interface PositivePromptPlan {
  loras: LoraTag[];
  /** Other extra-network tags (hypernet, ...), removed from the text. */
  others: ExtraNetworkTag[];
  parts: PromptPart[];
}

/** `firstPassSteps`: `steps` are a hires fix's second pass (see promptSchedule). */
export function planPositivePrompt(prompt: string, steps: number, firstPassSteps?: number): PositivePromptPlan {
  const { prompt: text, loras, others } = extractExtraNetworks(prompt);
  const parts = parseSubPrompts(text).map((p) => ({ weight: p.weight, schedule: promptSchedule(p.text, steps, firstPassSteps) }));
  return { loras, others, parts };
}

export function planNegativePrompt(prompt: string, steps: number, firstPassSteps?: number): ScheduledPrompt[] {
  return promptSchedule(prompt, steps, firstPassSteps);
}
