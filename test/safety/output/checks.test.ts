// The real classifiers (nsfwjs MobileNetV2, human blazeface/facemesh/faceres) on images
// made by code, plus one photo crop from the sample image @vladmandic/human ships.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { run as likenessCli } from '../../../src/cli/commands/likeness.ts';
import { RedlineError } from '../../../src/errors.ts';
import { likenessSampleFromFile } from '../../../src/safety/likeness/register.ts';
import { LikenessStore } from '../../../src/safety/likeness/store.ts';
import { ImageSafetyChecks, checkInitImage, checkOutputImage } from '../../../src/safety/output/checks.ts';
import { FaceAnalyzer, humanPackageDir } from '../../../src/safety/output/faces.ts';
import type { RgbImage } from '../../../src/safety/output/image.ts';
import { loadTf } from '../../../src/safety/output/tfjs.ts';
import { checkerboard, flatColour, gradient, PERSON_A, PERSON_B, rasterize, renderFace, shapesSvg, toPng } from './synthetic.ts';

/** Mean absolute difference between horizontal neighbours: what a blur removes. */
function edgeEnergy(img: RgbImage): number {
  let sum = 0;
  for (let y = 0; y < img.height; y++) {
    for (let x = 1; x < img.width; x++) {
      for (let c = 0; c < 3; c++) sum += Math.abs(img.data[(y * img.width + x) * 3 + c]! - img.data[(y * img.width + x - 1) * 3 + c]!);
    }
  }
  return sum / (img.height * (img.width - 1) * 3);
}

function mean(img: RgbImage): number {
  return img.data.reduce((a, b) => a + b, 0) / img.data.length;
}

/** A 160x160 crop of one adult's portrait from the sample collage shipped in @vladmandic/human. */
async function packagedPhotoCrop(): Promise<RgbImage> {
  const { data, info } = await sharp(join(humanPackageDir(), 'assets', 'samples.jpg'))
    .extract({ left: 160, top: 0, width: 160, height: 160 })
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data), width: info.width, height: info.height };
}

const fetchCalls: string[] = [];
let checks: ImageSafetyChecks;
let dataDir: string;
let store: LikenessStore;

beforeAll(async () => {
  vi.stubGlobal('fetch', async (url: unknown) => {
    fetchCalls.push(String(url));
    throw new Error('network access during safety model load');
  });
  dataDir = mkdtempSync(join(tmpdir(), 'redline-checks-'));
  store = LikenessStore.open(dataDir);
  checks = await ImageSafetyChecks.load({ likeness: () => store.gallery() });
});

afterAll(() => {
  vi.unstubAllGlobals();
  rmSync(dataDir, { recursive: true, force: true });
});

describe('image safety checks with the bundled models', () => {
  it('load from files inside node_modules without any network call', () => {
    expect(fetchCalls).toEqual([]);
  });

  it('find no face and no sexual content in flat colours, gradients and shapes, and pass them at any intensity', async () => {
    const images = [flatColour(512, 512, [128, 128, 128]), flatColour(512, 512, [200, 30, 30]), gradient(512, 512), checkerboard(512, 512, 16), await rasterize(shapesSvg())];
    for (const image of images) {
      const result = await checkOutputImage(checks, image, { intensity: 3 });
      expect(result.scores.faces).toEqual([]);
      const { Porn, Hentai, Sexy } = result.scores.nsfw;
      expect(Math.max(Porn, Hentai, Sexy)).toBeLessThan(0.1);
      expect(result.verdict).toBe('pass');
      expect(result.image).toBe(image);
      const total = Object.values(result.scores.nsfw).reduce((a, b) => a + b, 0);
      expect(total).toBeCloseTo(1, 5);
    }
  });

  it('give the same scores for the same pixels every time', async () => {
    const face = await renderFace(PERSON_A);
    const first = await checks.measure(face);
    const second = await checks.measure({ ...face, data: Uint8Array.from(face.data) });
    expect(second).toEqual(first);
    const grad = gradient(512, 512);
    expect(await checks.measure(grad)).toEqual(await checks.measure(grad));
  });

  it('block or blur at a sexual-content threshold just under the measured score, pass just over it', async () => {
    const image = gradient(512, 512);
    const porn = (await checks.measure(image)).nsfw.Porn;
    expect(porn).toBeGreaterThan(0);
    const under = checks.withOptions({ nsfw: { thresholds: { porn: porn * 0.999 }, action: 'block' } });
    const over = checks.withOptions({ nsfw: { thresholds: { porn: porn * 1.001 }, action: 'block' } });
    const blurUnder = checks.withOptions({ nsfw: { thresholds: { porn: porn * 0.999 }, action: 'blur' } });

    const blocked = await under.checkOutput(image, { intensity: 0 });
    expect(blocked).toMatchObject({ verdict: 'block', reasons: [{ code: 'sexual_content' }] });
    expect(blocked.image).toBeUndefined();
    expect((await over.checkOutput(image, { intensity: 0 })).verdict).toBe('pass');
    expect((await blurUnder.checkOutput(image, { intensity: 0 })).verdict).toBe('blur');
    // Graded intensity never combines with sexual content: blur does not apply.
    expect(await blurUnder.checkOutput(image, { intensity: 1 })).toMatchObject({ verdict: 'block', reasons: [{ code: 'sexual_content_with_intensity' }] });
  });

  it('blur returns a strongly blurred copy of the same size', async () => {
    const image = checkerboard(512, 512, 16);
    const sexy = (await checks.measure(image)).nsfw.Sexy;
    expect(sexy).toBeGreaterThan(0);
    const result = await checks.withOptions({ nsfw: { thresholds: { sexy: sexy * 0.999 }, action: 'blur' } }).checkOutput(image, { intensity: 0 });
    expect(result.verdict).toBe('blur');
    const blurred = result.image!;
    expect([blurred.width, blurred.height, blurred.data.length]).toEqual([512, 512, image.data.length]);
    expect(edgeEnergy(image)).toBeGreaterThan(7);
    expect(edgeEnergy(blurred)).toBeLessThan(edgeEnergy(image) / 100);
    // Blurred, not blanked: the average grey of the board stays.
    expect(mean(blurred)).toBeCloseTo(mean(image), -1);
  });

  it('find the code-drawn face with an age estimate, and the age threshold acts in graded content only', async () => {
    const image = await renderFace(PERSON_A);
    const { faces } = await checks.measure(image);
    expect(faces).toHaveLength(1);
    const [face] = faces;
    expect(face!.score).toBeGreaterThan(0.9);
    const [x, y, w, h] = face!.box;
    // The drawn face is the ellipse centred at (256, 250) with radii 120 x 160.
    expect(Math.abs(x + w / 2 - 256)).toBeLessThan(40);
    expect(Math.abs(y + h / 2 - 250)).toBeLessThan(60);
    expect(face!.age).toBeGreaterThan(18.5);
    expect(face!.age).toBeLessThan(119);

    const olderThreshold = checks.withOptions({ minFaceAge: face!.age + 0.5 });
    const youngerThreshold = checks.withOptions({ minFaceAge: face!.age - 0.5 });
    expect(await olderThreshold.checkOutput(image, { intensity: 1 })).toMatchObject({ verdict: 'block', reasons: [{ code: 'minor_in_graded_content' }] });
    expect((await olderThreshold.checkOutput(image, { intensity: 0 })).verdict).toBe('pass');
    expect((await youngerThreshold.checkOutput(image, { intensity: 3 })).verdict).toBe('pass');
  });

  it('block the likeness of a registered code-drawn person, moved or on another background, and not a different face', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'redline-faces-'));
    try {
      const file = join(dir, 'person-a.png');
      writeFileSync(file, await toPng(await renderFace(PERSON_A)));
      store.add('Person A', [await likenessSampleFromFile(await FaceAnalyzer.load(), file)]);

      for (const variant of [{ ...PERSON_A, dx: 30, dy: -20 }, { ...PERSON_A, background: '#c98f7f' }]) {
        const result = await checks.checkOutput(await renderFace(variant), { intensity: 0 });
        expect(result).toMatchObject({ verdict: 'block', reasons: [{ code: 'protected_likeness' }] });
        expect(result.scores.faces[0]!.likeness!.name).toBe('Person A');
        expect(result.scores.faces[0]!.likeness!.cosine).toBeGreaterThan(0.9);
        expect(result.reasons[0]!.message).not.toContain('Person A');
      }
      const other = await checks.checkOutput(await renderFace(PERSON_B), { intensity: 0 });
      expect(other.verdict).toBe('pass');
      expect(other.scores.faces[0]!.likeness!.cosine).toBeLessThan(checks.options.likenessThreshold);

      const moved = await renderFace({ ...PERSON_A, dx: 30, dy: -20 });
      const cosine = (await checks.measure(moved)).faces[0]!.likeness!.cosine;
      expect((await checks.withOptions({ likenessThreshold: Math.min(1, cosine + 1e-4) }).checkOutput(moved, { intensity: 0 })).verdict).toBe('pass');
      expect((await checks.withOptions({ likenessThreshold: cosine - 1e-4 }).checkOutput(moved, { intensity: 0 })).verdict).toBe('block');
    } finally {
      store.remove('Person A');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('gate init images: a photographed face with graded intensity needs the consent workflow and an attestation', async () => {
    const photo = await packagedPhotoCrop();
    const noConsent = { workflowEnabled: false };
    const refused = await checkInitImage(checks, photo, { intensity: 1, consent: noConsent });
    expect(refused.scores.faces).toHaveLength(1);
    expect(refused.scores.photo).toBeGreaterThan(0.9);
    expect(refused).toMatchObject({ verdict: 'block', photographicFace: true, reasons: [{ code: 'photographic_face_in_graded_content' }] });
    expect(await checkInitImage(checks, photo, { intensity: 1, consent: { workflowEnabled: true } })).toMatchObject({ verdict: 'block', reasons: [{ code: 'consent_attestation_missing' }] });
    expect(await checkInitImage(checks, photo, { intensity: 2, consent: { workflowEnabled: true, attestationRef: 'consent-0042' } })).toMatchObject({ verdict: 'pass', consentReference: 'consent-0042' });
    expect((await checkInitImage(checks, photo, { intensity: 0, consent: noConsent })).verdict).toBe('pass');
    const above = checks.withOptions({ photoThreshold: Math.min(1, refused.scores.photo + 1e-4) });
    expect(await above.checkInitImage(photo, { intensity: 1, consent: noConsent })).toMatchObject({ verdict: 'pass', photographicFace: false });

    // The flat-shaded cartoon of person B reads as a drawing, so graded edits need no consent.
    const drawn = await checkInitImage(checks, await renderFace(PERSON_B), { intensity: 2, consent: noConsent });
    expect(drawn.scores.faces).toHaveLength(1);
    expect(drawn.scores.photo).toBeLessThan(checks.options.photoThreshold);
    expect(drawn).toMatchObject({ verdict: 'pass', photographicFace: false });
  });

  it('leave no tensors behind, so a long-running server does not grow', async () => {
    const tf = await loadTf();
    const face = await renderFace(PERSON_A);
    const plain = gradient(256, 256);
    await checks.checkOutput(face, { intensity: 1 });
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) {
      await checks.checkOutput(face, { intensity: 1 });
      await checks.checkOutput(plain, { intensity: 0 });
    }
    expect(tf.memory().numTensors).toBe(before);
  });

  it('reject a buffer that does not match its dimensions', async () => {
    await expect(checks.checkOutput({ data: new Uint8Array(10), width: 4, height: 4 }, { intensity: 0 })).rejects.toThrow(RedlineError);
    await expect(checks.checkOutput({ data: new Uint8Array(4 * 4 * 4), width: 4, height: 4 }, { intensity: 0 })).rejects.toThrow(/needs 48/);
  });
});

describe('with diffusers\' safety checker configured', () => {
  it('adds its concept scores to every measurement and its verdict to the decision', async () => {
    const fixture = join(import.meta.dirname, 'fixtures', 'tiny_sd_safety_checker');
    const withSd = await ImageSafetyChecks.load({ sdSafetyChecker: { weights: join(fixture, 'model.safetensors') } });
    const image = gradient(64, 64);
    const result = await withSd.checkOutput(image, { intensity: 0 });
    const sd = result.scores.sdSafetyChecker!;
    expect(sd.specialScores).toHaveLength(3);
    expect(sd.conceptScores).toHaveLength(17);
    expect(sd.nsfw).toBe(sd.badConcepts.length > 0);
    expect(result.verdict).toBe(sd.nsfw ? 'block' : 'pass');
    expect((await checks.measure(image)).sdSafetyChecker).toBeUndefined();
  });
});

describe('redline likeness', () => {
  it('adds, lists and removes a person from a code-drawn photo, and refuses a photo without a face', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'redline-cli-'));
    const logs: string[] = [];
    const log = vi.spyOn(console, 'log').mockImplementation((msg: unknown) => void logs.push(String(msg)));
    try {
      const face = join(dir, 'b.png');
      const blank = join(dir, 'blank.png');
      writeFileSync(face, await toPng(await renderFace(PERSON_B)));
      writeFileSync(blank, await toPng(flatColour(256, 256, [90, 90, 90])));
      expect(await likenessCli(['add', 'Person B', face, '--data-dir', dir])).toBe(0);
      await expect(likenessCli(['add', 'Nobody', blank, '--data-dir', dir])).rejects.toThrow(/No face found in .*blank\.png/);
      logs.length = 0;
      expect(await likenessCli(['list', '--json', '--data-dir', dir])).toBe(0);
      expect(JSON.parse(logs[0]!).map((p: { name: string; samples: number }) => [p.name, p.samples])).toEqual([['Person B', 1]]);
      expect(LikenessStore.open(dir).gallery()[0]!.embedding).toHaveLength(1024);
      expect(await likenessCli(['remove', 'Person B', '--data-dir', dir])).toBe(0);
      expect(LikenessStore.open(dir).list()).toEqual([]);
      await expect(likenessCli(['frobnicate', '--data-dir', dir])).rejects.toThrow(/Unknown likeness action/);
    } finally {
      log.mockRestore();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
