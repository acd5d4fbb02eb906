// The rules, separate from the models: given what the classifiers measured, what happens.
import { RedlineError } from '../../errors.ts';
import type { LikenessMatch } from '../likeness/match.ts';
import type { NsfwScores } from './nsfw.ts';
import type { SafetyCheckerScores } from './sd-safety-checker.ts';
import type { OutputCheckOptions } from './options.ts';

export interface FaceScores {
  box: [number, number, number, number];
  score: number;
  age: number;
  /** Closest registered protected person, when any is registered. */
  likeness?: LikenessMatch;
}

/** What the classifiers measured on one image; goes to the audit log as is. */
export interface ImageScores {
  /** nsfwjs class probabilities (they sum to 1). */
  nsfw: NsfwScores;
  /** Neutral + Sexy + Porn: how much the image looks like a photograph. */
  photo: number;
  /** Faces at or above the detector score threshold. */
  faces: FaceScores[];
  /** diffusers' safety checker, when the operator provided its weights. */
  sdSafetyChecker?: SafetyCheckerScores;
}

export type CheckReasonCode =
  | 'sexual_content'
  | 'sexual_content_with_intensity'
  | 'minor_in_sexual_content'
  | 'minor_in_graded_content'
  | 'protected_likeness'
  | 'photographic_face_in_graded_content'
  | 'consent_attestation_missing';

export interface CheckReason {
  code: CheckReasonCode;
  /** Shown to the caller: says what was found, not how to get around it. */
  message: string;
}

const MESSAGES: Record<CheckReasonCode, string> = {
  sexual_content: 'The image was classified as sexual content, which this deployment does not allow.',
  sexual_content_with_intensity: 'Sexual content cannot be combined with graphic intensity.',
  minor_in_sexual_content: 'The image shows a person who may be a minor together with sexual content.',
  minor_in_graded_content: 'The image shows a person who may be a minor together with graphic content.',
  protected_likeness: 'The image shows the likeness of a protected person.',
  photographic_face_in_graded_content: 'Graphic edits of photographs of real people are not allowed for your role.',
  consent_attestation_missing: 'Graphic edits of a photographed person need a consent attestation reference.',
};

function reason(code: CheckReasonCode): CheckReason {
  return { code, message: MESSAGES[code] };
}

export function assertIntensity(intensity: number): void {
  if (!Number.isInteger(intensity) || intensity < 0 || intensity > 3) {
    throw new RedlineError('bad_intensity', `Intensity must be an integer level 0-3, got ${JSON.stringify(intensity)}.`);
  }
}

/** nsfwjs over any class threshold, or (when configured) a concept of diffusers' safety checker. */
export function isSexual(scores: ImageScores, options: OutputCheckOptions): boolean {
  const t = options.nsfw.thresholds;
  const { Porn, Hentai, Sexy } = scores.nsfw;
  return Porn >= t.porn || Hentai >= t.hentai || Sexy >= t.sexy || scores.sdSafetyChecker?.nsfw === true;
}

/** An age the model could not estimate counts as a minor. */
function looksUnderAge(face: FaceScores, options: OutputCheckOptions): boolean {
  return !(face.age >= options.minFaceAge);
}

/** Rules shared by output and init images. */
function commonReasons(scores: ImageScores, intensity: number, options: OutputCheckOptions): CheckReason[] {
  const reasons: CheckReason[] = [];
  const sexual = isSexual(scores, options);
  const minor = scores.faces.some((f) => looksUnderAge(f, options));
  if (sexual && intensity > 0) reasons.push(reason('sexual_content_with_intensity'));
  if (sexual && minor) reasons.push(reason('minor_in_sexual_content'));
  if (intensity > 0 && minor) reasons.push(reason('minor_in_graded_content'));
  if (scores.faces.some((f) => f.likeness && f.likeness.cosine >= options.likenessThreshold)) reasons.push(reason('protected_likeness'));
  return reasons;
}

export interface OutputDecision {
  verdict: 'pass' | 'block' | 'blur';
  reasons: CheckReason[];
}

/** For a decoded output image at the request's effective intensity. */
export function decideOutput(scores: ImageScores, intensity: number, options: OutputCheckOptions): OutputDecision {
  assertIntensity(intensity);
  const reasons = commonReasons(scores, intensity, options);
  const sexual = isSexual(scores, options);
  if (reasons.length > 0) {
    if (sexual && !reasons.some((r) => r.code.startsWith('sexual_'))) reasons.unshift(reason('sexual_content'));
    return { verdict: 'block', reasons };
  }
  if (sexual) {
    return { verdict: options.nsfw.action === 'blur' ? 'blur' : 'block', reasons: [reason('sexual_content')] };
  }
  return { verdict: 'pass', reasons: [] };
}

export interface ConsentContext {
  /** From the caller's role in the policy (server side), never from the request. */
  workflowEnabled: boolean;
  /** From the request: the reference of the subject's signed consent, kept in the audit log. */
  attestationRef?: string;
}

export interface InitImageDecision {
  verdict: 'pass' | 'block';
  reasons: CheckReason[];
  /** Whether the image counts as a photograph of a person (face found, photo score over threshold). */
  photographicFace: boolean;
  /** The attestation the pass relied on; the audit log must store it. */
  consentReference?: string;
}

/** For an img2img / inpainting init image, before any sampling. */
export function decideInitImage(scores: ImageScores, intensity: number, consent: ConsentContext, options: OutputCheckOptions): InitImageDecision {
  assertIntensity(intensity);
  const reasons = commonReasons(scores, intensity, options);
  const sexual = isSexual(scores, options);
  // Blurring applies to what Redline outputs; a sexual source image under a blocking policy
  // is refused before any compute is spent on it.
  if (sexual && options.nsfw.action === 'block' && !reasons.some((r) => r.code.startsWith('sexual_'))) reasons.unshift(reason('sexual_content'));
  const photographicFace = scores.faces.length > 0 && scores.photo >= options.photoThreshold;
  let consentReference: string | undefined;
  if (photographicFace && intensity > 0) {
    const ref = consent.attestationRef?.trim();
    if (!consent.workflowEnabled) reasons.push(reason('photographic_face_in_graded_content'));
    else if (!ref) reasons.push(reason('consent_attestation_missing'));
    else consentReference = ref;
  }
  if (reasons.length > 0) return { verdict: 'block', reasons, photographicFace };
  return consentReference === undefined ? { verdict: 'pass', reasons, photographicFace } : { verdict: 'pass', reasons, photographicFace, consentReference };
}
