// Caption handling as kohya's process_caption: whole-caption dropout, then tag dropout and
// shuffling of the comma-separated tags after the first keep_tokens. Redline adds the
// graded-intensity tag: `intensity:N` is taken out of the caption before anything else and
// recorded as the image's level.
import { RedlineError } from '../../errors.ts';
import type { TrainRng } from './rng.ts';

export const MAX_INTENSITY = 3;
const INTENSITY_TAG = /^intensity\s*:\s*(\S*)$/i;

export interface ParsedCaption {
  /** The caption without the intensity tag (tags re-joined with ", "). */
  text: string;
  /** The `intensity:N` level, or null when the caption carries none. */
  intensity: number | null;
}

/** Splits off the intensity tag. `where` names the caption file for errors. */
export function parseCaption(raw: string, where: string): ParsedCaption {
  const tags = splitTags(raw);
  let intensity: number | null = null;
  const kept: string[] = [];
  for (const tag of tags) {
    const m = INTENSITY_TAG.exec(tag);
    if (!m) {
      kept.push(tag);
      continue;
    }
    const v = m[1]!;
    if (!/^[0-9]$/.test(v) || Number(v) > MAX_INTENSITY) {
      throw new RedlineError('dataset_caption', `${where}: "${tag}" is not an intensity level.`, `Use intensity:0 to intensity:${MAX_INTENSITY}.`);
    }
    if (intensity !== null) throw new RedlineError('dataset_caption', `${where} has more than one intensity tag.`, 'Keep one intensity:N tag per caption.');
    intensity = Number(v);
  }
  return { text: kept.join(', '), intensity };
}

export function splitTags(caption: string): string[] {
  return caption.trim().split(',').map((t) => t.trim()).filter((t) => t.length > 0);
}

export interface CaptionOptions {
  shuffleCaption: boolean;
  keepTokens: number;
  captionDropoutRate: number;
  captionTagDropoutRate: number;
}

/** kohya process_caption (the per-step edit of one caption). Draws from `rng` only for the
 * edits that are switched on, so turning one on does not shift the others' draws. */
export function processCaption(text: string, opts: CaptionOptions, rng: TrainRng): string {
  if (opts.captionDropoutRate > 0 && rng.next() < opts.captionDropoutRate) return '';
  if (!opts.shuffleCaption && opts.captionTagDropoutRate <= 0) return text;
  const tags = splitTags(text);
  const fixed = tags.slice(0, opts.keepTokens);
  let flex = tags.slice(opts.keepTokens);
  if (opts.captionTagDropoutRate > 0) flex = flex.filter(() => rng.next() >= opts.captionTagDropoutRate);
  if (opts.shuffleCaption) rng.shuffle(flex);
  return [...fixed, ...flex].join(', ');
}

/** Tag counts of a set of captions, as kohya's ss_tag_frequency counts them (stripped tags). */
export function tagFrequency(captions: Iterable<string>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const c of captions) for (const t of splitTags(c)) out[t] = (out[t] ?? 0) + 1;
  return out;
}
