import { RedlineError } from '../../errors.ts';

export type SexualContentAction = 'block' | 'blur';

/**
 * Thresholds of the image checks. These belong to the policy (`policy.outputChecks`);
 * until the policy module provides them, callers pass this object (or parts of it).
 */
export interface OutputCheckOptions {
  nsfw: {
    /** Sum of the Porn + Hentai + Sexy probabilities at or above which an image is sexual. */
    threshold: number;
    /** What happens to sexual content with intensity 0 and no minor: block, or blur it. */
    action: SexualContentAction;
  };
  /** A face estimated younger than this (years) blocks graded or sexual images. */
  minFaceAge: number;
  /** Cosine similarity at or above which a face is a registered protected person. */
  likenessThreshold: number;
  /** Faces the detector scores below this are ignored. */
  minFaceScore: number;
  /** Sum of nsfwjs' photo classes (Neutral + Sexy + Porn) at or above which an image with a face counts as a photograph. */
  photoThreshold: number;
}

export type OutputCheckOptionsInput = Partial<Omit<OutputCheckOptions, 'nsfw'>> & { nsfw?: Partial<OutputCheckOptions['nsfw']> };

export const DEFAULT_OUTPUT_CHECK_OPTIONS: Readonly<OutputCheckOptions> = Object.freeze({
  nsfw: Object.freeze({ threshold: 0.5, action: 'block' as SexualContentAction }),
  // Deliberately conservative (issue 6): adults who look young are blocked too.
  minFaceAge: 25,
  likenessThreshold: 0.8,
  minFaceScore: 0.3,
  photoThreshold: 0.5,
});

function unitInterval(name: string, value: number): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > 1) {
    throw new RedlineError('bad_output_check_option', `outputChecks.${name} must be a number from 0 to 1, got ${JSON.stringify(value)}.`);
  }
  return value;
}

export function resolveOutputCheckOptions(input: OutputCheckOptionsInput = {}): OutputCheckOptions {
  const d = DEFAULT_OUTPUT_CHECK_OPTIONS;
  const action = input.nsfw?.action ?? d.nsfw.action;
  if (action !== 'block' && action !== 'blur') {
    throw new RedlineError('bad_output_check_option', `outputChecks.nsfw.action must be "block" or "blur", got ${JSON.stringify(action)}.`);
  }
  const minFaceAge = input.minFaceAge ?? d.minFaceAge;
  if (typeof minFaceAge !== 'number' || !Number.isFinite(minFaceAge) || minFaceAge < 18 || minFaceAge > 120) {
    throw new RedlineError('bad_output_check_option', `outputChecks.minFaceAge must be a number of years from 18 to 120, got ${JSON.stringify(minFaceAge)}.`);
  }
  return {
    nsfw: { threshold: unitInterval('nsfw.threshold', input.nsfw?.threshold ?? d.nsfw.threshold), action },
    minFaceAge,
    likenessThreshold: unitInterval('likenessThreshold', input.likenessThreshold ?? d.likenessThreshold),
    minFaceScore: unitInterval('minFaceScore', input.minFaceScore ?? d.minFaceScore),
    photoThreshold: unitInterval('photoThreshold', input.photoThreshold ?? d.photoThreshold),
  };
}
