// diffusers' StableDiffusionSafetyChecker on a tiny random model whose expected outputs come
// from an independent numpy transcription of transformers/diffusers
// (fixtures/make_sd_safety_checker.py), plus the decision rules on hand-made embeddings.
import { copyFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RedlineError } from '../../../src/errors.ts';
import { CLIP_MEAN, CLIP_STD, clipPixelValues, safetyCheckerScores, SdSafetyChecker } from '../../../src/safety/output/sd-safety-checker.ts';
import { readSafetensors, SafetensorsFile, writeSafetensors } from '../../../src/tensor/safetensors.ts';
import { flatColour } from './synthetic.ts';

const FIXTURE = join(import.meta.dirname, 'fixtures', 'tiny_sd_safety_checker');
const expected = JSON.parse(readFileSync(join(FIXTURE, 'expected.json'), 'utf8')) as {
  pixel_values: number[];
  image_embeds: number[];
  special_scores: number[];
  special_care: number[];
  concept_scores: number[];
  bad_concepts: number[];
};

function conceptWeights() {
  const f = SafetensorsFile.open(join(FIXTURE, 'model.safetensors'));
  return {
    concept: f.getFloat32('concept_embeds'),
    conceptThresholds: f.getFloat32('concept_embeds_weights'),
    special: f.getFloat32('special_care_embeds'),
    specialThresholds: f.getFloat32('special_care_embeds_weights'),
  };
}

describe('SD safety checker', () => {
  it('computes the CLIP vision embedding of the numpy reference', async () => {
    const checker = await SdSafetyChecker.load(join(FIXTURE, 'model.safetensors'));
    expect(checker.config).toMatchObject({ hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, patch_size: 4, image_size: 12, projection_dim: 8 });
    const embed = await checker.embed(Float32Array.from(expected.pixel_values));
    expect(embed).toHaveLength(expected.image_embeds.length);
    const maxErr = Math.max(...expected.image_embeds.map((v, i) => Math.abs(v - embed[i]!)));
    expect(maxErr).toBeLessThan(1e-4);
  });

  it('decides like StableDiffusionSafetyChecker.forward, special-care adjustment included', () => {
    const scores = safetyCheckerScores(Float32Array.from(expected.image_embeds), conceptWeights());
    expect(scores.specialCare).toEqual(expected.special_care);
    expect(scores.badConcepts).toEqual(expected.bad_concepts);
    expect(scores.nsfw).toBe(true);
    scores.specialScores.forEach((s, i) => expect(s).toBeCloseTo(expected.special_scores[i]!, 6));
    scores.conceptScores.forEach((s, i) => expect(s).toBeCloseTo(expected.concept_scores[i]!, 6));
  });

  it('adds 0.01 to every score after the first special-care hit, and rounds to 3 decimals', () => {
    // Unit embeddings in 2-d: cos(image=[1,0], [cos a, sin a]) = cos a.
    const unit = (...angles: number[]) => Float32Array.from(angles.flatMap((a) => [Math.cos(a), Math.sin(a)]));
    const image = Float32Array.from([3, 0]); // normalised before use
    const w = {
      special: unit(Math.acos(0.5), Math.acos(0.7), Math.acos(0.3)),
      specialThresholds: Float32Array.from([0.6, 0.695, 0.295]),
      concept: unit(Math.acos(0.4), Math.acos(0.4)),
      conceptThresholds: Float32Array.from([0.405, 0.42]),
    };
    const r = safetyCheckerScores(image, w);
    // special 0: 0.5-0.6 = -0.1; special 1: 0.7-0.695 = 0.005 fires; special 2: 0.3-0.295+0.01 = 0.015.
    expect(r.specialScores).toEqual([-0.1, 0.005, 0.015]);
    expect(r.specialCare).toEqual([1, 2]);
    // concept 0: 0.4-0.405+0.01 = 0.005 fires only through the adjustment; concept 1: -0.01.
    expect(r.conceptScores).toEqual([0.005, -0.01]);
    expect(r.badConcepts).toEqual([0]);
    expect(r.nsfw).toBe(true);
    // Without the special hit the same concept stays below its threshold.
    const calm = safetyCheckerScores(image, { ...w, specialThresholds: Float32Array.from([0.6, 0.75, 0.5]) });
    expect(calm).toMatchObject({ specialCare: [], badConcepts: [], nsfw: false, conceptScores: [-0.005, -0.02] });
  });

  it('preprocesses like CLIPImageProcessor: CLIP mean/std, NCHW, centre crop', async () => {
    const size = 12;
    const flat = await clipPixelValues(flatColour(40, 30, [200, 100, 50]), size);
    expect(flat).toHaveLength(3 * size * size);
    [200, 100, 50].forEach((v, c) => {
      const want = (v / 255 - CLIP_MEAN[c]!) / CLIP_STD[c]!;
      for (let i = 0; i < size * size; i++) expect(flat[c * size * size + i]).toBeCloseTo(want, 5);
    });
  });

  it('loads the fp16 variant (model.fp16.safetensors) with the embedding within fp16 rounding', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'redline-sc16-'));
    try {
      const half = new Map([...readSafetensors(join(FIXTURE, 'model.safetensors'))].map(([k, t]) => [k, t.to('f16')]));
      writeSafetensors(join(dir, 'model.fp16.safetensors'), half);
      copyFileSync(join(FIXTURE, 'config.json'), join(dir, 'config.json'));
      const checker = await SdSafetyChecker.load(join(dir, 'model.fp16.safetensors'));
      const embed = await checker.embed(Float32Array.from(expected.pixel_values));
      const maxErr = Math.max(...expected.image_embeds.map((v, i) => Math.abs(v - embed[i]!)));
      expect(maxErr).toBeGreaterThan(0); // really ran on rounded weights
      expect(maxErr).toBeLessThan(2e-2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('needs the head count from config.json when the hidden size is not a multiple of 64', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'redline-sc-'));
    try {
      copyFileSync(join(FIXTURE, 'model.safetensors'), join(dir, 'model.safetensors'));
      await expect(SdSafetyChecker.load(join(dir, 'model.safetensors'))).rejects.toThrow(/attention head count/);
      await expect(SdSafetyChecker.load(join(FIXTURE, 'config.json'))).rejects.toThrow(RedlineError);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
