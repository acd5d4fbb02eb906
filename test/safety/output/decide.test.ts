// The rules on their own, with measurements written out by hand: which combination of
// sexual score, face age, likeness, photo score and intensity blocks, blurs or passes.
import { describe, expect, it } from 'vitest';
import { RedlineError } from '../../../src/errors.ts';
import { decideInitImage, decideOutput, type FaceScores, type ImageScores } from '../../../src/safety/output/decide.ts';
import { outputCheckOptionsFromPolicy, resolveOutputCheckOptions } from '../../../src/safety/output/options.ts';

const options = resolveOutputCheckOptions();
const blurOptions = resolveOutputCheckOptions({ nsfw: { action: 'blur' } });

function face(age: number, likeness?: { name: string; cosine: number }): FaceScores {
  return { box: [10, 10, 100, 100], score: 0.99, age, ...(likeness ? { likeness } : {}) };
}

/** `porn` is the Porn probability; the rest goes to Drawing unless hentai/sexy are given. */
function scores(porn: number, faces: FaceScores[] = [], photo = 0.1, other: { hentai?: number; sexy?: number } = {}): ImageScores {
  const hentai = other.hentai ?? 0;
  const sexy = other.sexy ?? 0;
  return { nsfw: { Drawing: 1 - porn - hentai - sexy, Hentai: hentai, Neutral: 0, Porn: porn, Sexy: sexy }, photo, faces };
}

const codes = (r: { reasons: { code: string }[] }) => r.reasons.map((x) => x.code);

describe('output decision', () => {
  it('passes a clean image at any intensity', () => {
    for (const intensity of [0, 1, 2, 3]) expect(decideOutput(scores(0.01, [face(40)]), intensity, options)).toEqual({ verdict: 'pass', reasons: [] });
  });

  it('blocks sexual content when any class reaches its threshold, not below', () => {
    // Defaults: porn 0.6, hentai 0.6, sexy 0.85.
    expect(codes(decideOutput(scores(0.6), 0, options))).toEqual(['sexual_content']);
    expect(decideOutput(scores(0.5999), 0, options).verdict).toBe('pass');
    expect(decideOutput(scores(0, [], 0.1, { hentai: 0.6 }), 0, options).verdict).toBe('block');
    expect(decideOutput(scores(0, [], 0.1, { hentai: 0.59 }), 0, options).verdict).toBe('pass');
    expect(decideOutput(scores(0, [], 0.1, { sexy: 0.85 }), 0, options).verdict).toBe('block');
    expect(decideOutput(scores(0, [], 0.1, { sexy: 0.84 }), 0, options).verdict).toBe('pass');
    const strict = resolveOutputCheckOptions({ nsfw: { thresholds: { sexy: 0.3 } } });
    expect(decideOutput(scores(0, [], 0.1, { sexy: 0.31 }), 0, strict).verdict).toBe('block');
  });

  it('counts a concept of diffusers\' safety checker as sexual content', () => {
    const sd = { specialScores: [-0.1, -0.1, -0.1], conceptScores: [0.01], specialCare: [], badConcepts: [0], nsfw: true };
    expect(decideOutput({ ...scores(0.01), sdSafetyChecker: sd }, 0, options)).toMatchObject({ verdict: 'block', reasons: [{ code: 'sexual_content' }] });
    expect(decideOutput({ ...scores(0.01), sdSafetyChecker: sd }, 0, blurOptions).verdict).toBe('blur');
    expect(decideOutput({ ...scores(0.01), sdSafetyChecker: { ...sd, badConcepts: [], nsfw: false } }, 0, options).verdict).toBe('pass');
  });

  it('blurs sexual content only when the policy chose blur and nothing else is wrong', () => {
    expect(decideOutput(scores(0.9, [face(40)]), 0, blurOptions)).toMatchObject({ verdict: 'blur', reasons: [{ code: 'sexual_content' }] });
    // Sexual content never combines with graded intensity, whatever the action.
    expect(decideOutput(scores(0.9), 1, blurOptions)).toMatchObject({ verdict: 'block', reasons: [{ code: 'sexual_content_with_intensity' }] });
    // A possible minor in sexual content is never blurred through.
    expect(codes(decideOutput(scores(0.9, [face(20)]), 0, blurOptions))).toEqual(['sexual_content', 'minor_in_sexual_content']);
    expect(decideOutput(scores(0.9, [face(20)]), 0, blurOptions).verdict).toBe('block');
  });

  it('blocks a face under the age threshold in graded content, not at intensity 0', () => {
    expect(codes(decideOutput(scores(0.01, [face(24.9)]), 1, options))).toEqual(['minor_in_graded_content']);
    expect(decideOutput(scores(0.01, [face(24.9)]), 0, options).verdict).toBe('pass');
    expect(decideOutput(scores(0.01, [face(25)]), 3, options).verdict).toBe('pass');
    expect(decideOutput(scores(0.01, [face(30)]), 2, resolveOutputCheckOptions({ minFaceAge: 35 })).verdict).toBe('block');
  });

  it('treats a face whose age could not be estimated as a minor', () => {
    expect(decideOutput(scores(0.01, [face(Number.NaN)]), 1, options).verdict).toBe('block');
  });

  it('blocks a protected likeness at any intensity, at the cosine threshold and above', () => {
    const at = face(40, { name: 'P', cosine: options.likenessThreshold });
    const below = face(40, { name: 'P', cosine: options.likenessThreshold - 1e-6 });
    expect(codes(decideOutput(scores(0.01, [at]), 0, options))).toEqual(['protected_likeness']);
    expect(decideOutput(scores(0.01, [below]), 0, options).verdict).toBe('pass');
  });

  it('rejects an intensity outside 0-3', () => {
    expect(() => decideOutput(scores(0), 4, options)).toThrow(RedlineError);
    expect(() => decideOutput(scores(0), 1.5, options)).toThrow(/integer level 0-3/);
  });
});

describe('init image decision', () => {
  const photo = (faces: FaceScores[]) => scores(0.01, faces, 0.95);
  const noConsent = { workflowEnabled: false };

  it('refuses a photographed face with graded intensity unless the role has the consent workflow', () => {
    const r = decideInitImage(photo([face(40)]), 1, noConsent, options);
    expect(r).toMatchObject({ verdict: 'block', photographicFace: true, reasons: [{ code: 'photographic_face_in_graded_content' }] });
    expect(r.consentReference).toBeUndefined();
  });

  it('with the consent workflow, needs an attestation reference and returns it for the audit log', () => {
    expect(codes(decideInitImage(photo([face(40)]), 2, { workflowEnabled: true }, options))).toEqual(['consent_attestation_missing']);
    expect(codes(decideInitImage(photo([face(40)]), 2, { workflowEnabled: true, attestationRef: '   ' }, options))).toEqual(['consent_attestation_missing']);
    expect(decideInitImage(photo([face(40)]), 2, { workflowEnabled: true, attestationRef: ' consent-2026-0042 ' }, options)).toEqual({
      verdict: 'pass', reasons: [], photographicFace: true, consentReference: 'consent-2026-0042',
    });
  });

  it('consent does not lift the age or likeness rules', () => {
    const consent = { workflowEnabled: true, attestationRef: 'c-1' };
    expect(codes(decideInitImage(photo([face(20)]), 1, consent, options))).toEqual(['minor_in_graded_content']);
    expect(codes(decideInitImage(photo([face(40, { name: 'P', cosine: 0.97 })]), 0, consent, options))).toEqual(['protected_likeness']);
  });

  it('lets photographed faces through at intensity 0, and drawn faces at any intensity', () => {
    expect(decideInitImage(photo([face(40)]), 0, noConsent, options)).toEqual({ verdict: 'pass', reasons: [], photographicFace: true });
    expect(decideInitImage(scores(0.01, [face(40)], 0.2), 3, noConsent, options)).toEqual({ verdict: 'pass', reasons: [], photographicFace: false });
    expect(decideInitImage(scores(0.01, [], 0.99), 3, noConsent, options).photographicFace).toBe(false);
  });

  it('refuses a sexual init image under a blocking policy; under blur, leaves it to the output check', () => {
    expect(codes(decideInitImage(scores(0.8), 0, noConsent, options))).toEqual(['sexual_content']);
    expect(decideInitImage(scores(0.8), 0, noConsent, blurOptions).verdict).toBe('pass');
    expect(codes(decideInitImage(scores(0.8), 1, noConsent, blurOptions))).toEqual(['sexual_content_with_intensity']);
  });
});

describe('options', () => {
  it('has the documented defaults', () => {
    expect(resolveOutputCheckOptions()).toEqual({
      nsfw: { thresholds: { porn: 0.6, hentai: 0.6, sexy: 0.85 }, action: 'block' }, minFaceAge: 25, likenessThreshold: 0.8, minFaceScore: 0.3, photoThreshold: 0.5,
    });
  });

  it('take nsfw, age and likeness thresholds from the policy shape', () => {
    const fromPolicy = outputCheckOptionsFromPolicy({
      nsfw: { thresholds: { porn: 0.5, hentai: 0.4, sexy: 0.9 }, action: 'blur' }, minFaceAge: 30, likeness: { cosineThreshold: 0.7 },
    });
    expect(fromPolicy).toEqual({
      nsfw: { thresholds: { porn: 0.5, hentai: 0.4, sexy: 0.9 }, action: 'blur' }, minFaceAge: 30, likenessThreshold: 0.7, minFaceScore: 0.3, photoThreshold: 0.5,
    });
  });

  it('rejects values out of range with a message naming the field', () => {
    expect(() => resolveOutputCheckOptions({ nsfw: { thresholds: { porn: 1.5 } } })).toThrow(/outputChecks\.nsfw\.thresholds\.porn/);
    expect(() => resolveOutputCheckOptions({ nsfw: { action: 'allow' as never } })).toThrow(/"block" or "blur"/);
    expect(() => resolveOutputCheckOptions({ minFaceAge: 12 })).toThrow(/minFaceAge must be a number of years from 18/);
    expect(() => resolveOutputCheckOptions({ likenessThreshold: Number.NaN })).toThrow(/likenessThreshold/);
  });
});
