import { RedlineError } from '../../errors.ts';

export type SexualContentAction = 'block' | 'blur';

/** nsfwjs class probabilities at or above which an image counts as sexual (any one suffices). */
export interface NsfwThresholds {
  porn: number;
  hentai: number;
  sexy: number;
}

/**
 * Thresholds of the image checks. `nsfw`, `minFaceAge` and the likeness threshold are the
 * policy's `outputChecks` (see outputCheckOptionsFromPolicy); the two others are not in the
 * policy file yet and keep their defaults unless a caller sets them.
 */
export interface OutputCheckOptions {
  nsfw: {
    thresholds: NsfwThresholds;
    /** What happens to sexual content with intensity 0 and no minor: block, or blur it. */
    action: SexualContentAction;
  };
  /** A face estimated younger than this (years) blocks graded or sexual images. */
  minFaceAge: number;
  /** Cosine similarity at or above which a face is a registered protected person. */
  likenessThreshold: number;
  /** Faces the detector scores below this are ignored. */
  minFaceScore: number;
  /** Neutral + Sexy + Porn (nsfwjs' photograph classes) at or above which an image with a face counts as a photograph. */
  photoThreshold: number;
}

export type OutputCheckOptionsInput = Partial<Omit<OutputCheckOptions, 'nsfw'>> & {
  nsfw?: { thresholds?: Partial<NsfwThresholds>; action?: SexualContentAction };
};

export const DEFAULT_OUTPUT_CHECK_OPTIONS: Readonly<OutputCheckOptions> = Object.freeze({
  // The values of src/safety/policy/default-policy.yaml.
  nsfw: Object.freeze({ thresholds: Object.freeze({ porn: 0.6, hentai: 0.6, sexy: 0.85 }), action: 'block' as SexualContentAction }),
  // Deliberately conservative (issue 6): adults who look young are blocked too.
  minFaceAge: 25,
  // Measured (test/safety/output/checks.test.ts, bench notes): the same code-drawn face moved
  // or recoloured scores 0.94-0.99 and the same photographed adult in two crops 0.96, while
  // different code-drawn faces reach 0.77 and different photographed adults 0.55.
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
  const t = input.nsfw?.thresholds ?? {};
  return {
    nsfw: {
      thresholds: {
        porn: unitInterval('nsfw.thresholds.porn', t.porn ?? d.nsfw.thresholds.porn),
        hentai: unitInterval('nsfw.thresholds.hentai', t.hentai ?? d.nsfw.thresholds.hentai),
        sexy: unitInterval('nsfw.thresholds.sexy', t.sexy ?? d.nsfw.thresholds.sexy),
      },
      action,
    },
    minFaceAge,
    likenessThreshold: unitInterval('likenessThreshold', input.likenessThreshold ?? d.likenessThreshold),
    minFaceScore: unitInterval('minFaceScore', input.minFaceScore ?? d.minFaceScore),
    photoThreshold: unitInterval('photoThreshold', input.photoThreshold ?? d.photoThreshold),
  };
}

/** The shape of `policy.outputChecks` (src/safety/policy), matched structurally. */
export interface PolicyOutputChecks {
  nsfw: { thresholds: NsfwThresholds; action: SexualContentAction };
  minFaceAge: number;
  likeness: { cosineThreshold: number };
}

export function outputCheckOptionsFromPolicy(oc: PolicyOutputChecks, extra: Pick<OutputCheckOptionsInput, 'minFaceScore' | 'photoThreshold'> = {}): OutputCheckOptions {
  return resolveOutputCheckOptions({ nsfw: oc.nsfw, minFaceAge: oc.minFaceAge, likenessThreshold: oc.likeness.cosineThreshold, ...extra });
}
