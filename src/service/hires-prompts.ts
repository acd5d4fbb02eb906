// A hires fix's own prompts and checkpoint on the request path (A1111's hr_prompt,
// hr_negative_prompt, hr_checkpoint_name): their <lora:> tags, the checkpoint they name,
// and the screening of what the second pass renders.
import type { AdapterUse, HiresFields, ModelInfo, Screener, ScreeningInput, ScreeningResult, ServiceComponents } from './backend.ts';
import { extractLoraTags, SubmissionError } from './submit.ts';

const tagKey = (tags: AdapterUse[]): string => tags.map((a) => `${a.name}\u0000${a.weight}`).sort().join('\u0001');
const tagText = (tags: AdapterUse[]): string => (tags.length ? tags.map((a) => `<lora:${a.name}:${a.weight}>`).join(' ') : 'none');

/**
 * The hires fields with the <lora:> tags taken out of the hires prompt, as the service takes
 * them out of the prompt. A1111 runs the second pass with hr_prompt's LoRAs; Redline keeps
 * the first pass's adapters, graded by the safety layer, so a hires prompt (or negative
 * prompt) naming other LoRAs than its first-pass counterpart is a 422.
 */
export function hiresWithoutLoraTags(prompt: string, negativePrompt: string, hires: HiresFields): HiresFields {
  const pairs = [
    ['hr_prompt', prompt, hires.prompt],
    ['hr_negative_prompt', negativePrompt, hires.negativePrompt],
  ] as const;
  for (const [field, first, second] of pairs) {
    if (!second) continue;
    const a = extractLoraTags(first).adapters;
    const b = extractLoraTags(second).adapters;
    if (tagKey(a) !== tagKey(b)) {
      throw new SubmissionError(422, 'hires_lora_mismatch',
        `${field} names other LoRAs (${tagText(b)}) than the first pass (${tagText(a)}): Redline runs the hires pass with the first pass's LoRAs. Repeat the same <lora:...> tags, or leave ${field} empty to use the first pass's text.`);
    }
  }
  return {
    ...hires,
    ...(hires.prompt ? { prompt: extractLoraTags(hires.prompt).prompt } : {}),
  };
}

/**
 * A hires checkpoint is the first pass's (A1111's "Use same checkpoint" and empty values
 * are dropped by the interface before this): the name must be the checkpoint the job runs
 * on; a different one is a 422, since Redline runs both passes on one model.
 */
export async function checkHiresCheckpoint(backend: ServiceComponents['backend'], model: string | null, hires: HiresFields): Promise<void> {
  const name = hires.checkpoint;
  if (!name) return;
  const models = await backend.listModels();
  const named = models.find((m) => m.title === name || m.model_name === name);
  if (!named) throw new SubmissionError(422, 'unknown_model', `hr_checkpoint_name '${name}' not found; see /sdapi/v1/sd-models.`);
  const current = model ?? (await backend.currentModel());
  const first = models.find((m) => m.title === current || m.model_name === current);
  if (named !== first) {
    throw new SubmissionError(422, 'unsupported', `hr_checkpoint_name '${name}' is another checkpoint than the first pass's ('${first?.title ?? current}'): Redline runs both passes on one checkpoint. Send null or "Use same checkpoint".`);
  }
}

/** One screening: of the prompts, the hires prompts, or both joined. */
export interface ScreeningRun {
  pass: 'first' | 'hires' | 'both';
  prompt: string;
  negativePrompt: string;
  result: ScreeningResult;
}

/**
 * Screens the prompts and, when the hires pass has prompts of its own, those alone and
 * joined to the first pass's (the final image carries both passes, so a combination across
 * them counts as one). A refusal of any stands; otherwise a clamp of any, at the highest
 * intensity any asked for and any was granted.
 */
export async function screenWithHires(
  screener: Screener,
  base: ScreeningInput,
  hires: { prompt: string; negativePrompt: string } | null,
): Promise<{ result: ScreeningResult; runs: ScreeningRun[] }> {
  const runs: ScreeningRun[] = [{ pass: 'first', prompt: base.prompt, negativePrompt: base.negativePrompt, result: await screener.screen(base) }];
  if (hires && (hires.prompt !== base.prompt || hires.negativePrompt !== base.negativePrompt)) {
    const both = { prompt: `${base.prompt}\n${hires.prompt}`, negativePrompt: `${base.negativePrompt}\n${hires.negativePrompt}` };
    for (const [pass, texts] of [['hires', hires], ['both', both]] as const) {
      runs.push({ pass, ...texts, result: await screener.screen({ ...base, ...texts }) });
    }
  }
  const refused = runs.find((r) => r.result.verdict === 'refuse');
  if (refused) return { result: refused.result, runs };
  const clamped = runs.find((r) => r.result.verdict === 'clamp');
  return {
    result: {
      ...(clamped ?? runs[0]!).result,
      requestedIntensity: Math.max(...runs.map((r) => r.result.requestedIntensity)),
      effectiveIntensity: Math.max(...runs.map((r) => r.result.effectiveIntensity)),
      categories: runs.flatMap((r) => r.result.categories),
    },
    runs,
  };
}

/** A1111's CheckpointInfo.short_title, which it writes as "Hires checkpoint": the file name without extension and the short hash. */
export function checkpointShortTitle(info: ModelInfo): string {
  return info.hash ? `${info.model_name} [${info.hash}]` : info.model_name;
}
