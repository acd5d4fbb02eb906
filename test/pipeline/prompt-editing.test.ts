// A1111 prompt editing, alternation and composable AND through the Generator, on the
// embedded model (models/redline-tiny, 128x128, few steps). Every expected image comes
// from a reference sampler loop written here with the lower-level pieces (sampler, seeded
// noise, the UNet and VAE sessions, PromptEncoder.encode of single texts): which text the
// UNet sees at which step is written out by hand from A1111's rules
// (modules/prompt_parser.py: a schedule entry [end, text] is used while the denoiser's
// call counter, from 0, is <= end; modules/sd_samplers_cfg_denoiser.py combine_denoised:
// uncond + sum_k w_k * cfg * (cond_k - uncond)).
import { describe, expect, it, vi } from 'vitest';
import { RedlineError } from '../../src/errors.ts';
import { Generator, type GeneratedImage, type GenerationHooks, type GenerationRequest } from '../../src/pipeline/generate.ts';
import { type RgbImage, rgbToVaeInput, unitToRgb, vaeOutputToUnit } from '../../src/pipeline/image.ts';
import type { StableDiffusionModel } from '../../src/pipeline/model.ts';
import { SafeLatentGuidance, SLD_PRESETS } from '../../src/safety/sld.ts';
import { create as createSampler, ImageRng } from '../../src/sampling/index.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import { type EncodedPrompt, promptChunks } from '../../src/text/conditioning.ts';
import { maxAbsDiff } from '../helpers/compare.ts';
import { useEmbeddedModel } from '../helpers/embedded-model.ts';
import { batchedUnetPredictions } from '../helpers/reference-unet.ts';

const SIZE = 128;
const LATENT = SIZE / 8;
const CFG = 7;
const SEED = 1234;

let model: StableDiffusionModel;
useEmbeddedModel((m) => (model = m));

const encode = (text: string): Promise<EncodedPrompt> => model.prompts.encode(text);
const unet = (x: Float32Array, B: number, t: number, contexts: EncodedPrompt[]): Promise<Float32Array[]> =>
  batchedUnetPredictions(model, x, B, LATENT, LATENT, t, contexts);

interface ReferenceRun {
  sampler: string;
  steps: number;
  seeds: number[];
  /** The conditionings of denoiser call i: [uncond, cond_1, ...]. */
  at: (i: number) => EncodedPrompt[];
  /** Combines [uncond, cond_1, ...] predictions into the guided one. */
  combine: (preds: Float32Array[], step: number) => Float32Array;
  img2img?: { image: RgbImage; strength: number };
}

async function reference(run: ReferenceRun): Promise<{ latents: Float32Array; images: RgbImage[]; calls: number }> {
  const B = run.seeds.length;
  const plane = 4 * LATENT * LATENT;
  const s = createSampler(run.sampler, { steps: run.steps, ...(run.img2img ? { strength: run.img2img.strength } : {}) });
  const rng = new ImageRng({ seeds: run.seeds, shape: [4, LATENT, LATENT], source: 'cpu' });
  const sf = model.vaeScalingFactor;
  let x: Float32Array;
  if (run.img2img) {
    const enc = await model.vaeEncoder();
    const post = await enc.run({ image: new Tensor('f32', [1, 3, SIZE, SIZE], rgbToVaeInput(run.img2img.image)) }, ['mean', 'logvar']);
    const mean = post.mean!.toFloat32();
    const logvar = post.logvar!.toFloat32();
    const eps = rng.next();
    const clean = new Float32Array(B * plane);
    for (let i = 0; i < B; i++) for (let k = 0; k < plane; k++) clean[i * plane + k] = sf * (mean[k]! + Math.exp(0.5 * logvar[k]!) * eps[i * plane + k]!);
    x = s.addNoise(clean, rng.next());
  } else {
    x = rng.next();
    for (let k = 0; k < x.length; k++) x[k] = x[k]! * s.initNoiseSigma;
  }
  for (let i = 0; i < s.timesteps.length; i++) {
    const preds = await unet(s.scaleModelInput(x, i), B, s.timesteps[i]!, run.at(i));
    s.step(run.combine(preds, i), i, x, rng);
  }
  const z = x.map((v) => v / sf);
  const decoded = (await model.vaeDecoder.run({ latent: new Tensor('f32', [B, 4, LATENT, LATENT], z) }, ['image'])).image!.toFloat32();
  const images = run.seeds.map((_, i) => unitToRgb(vaeOutputToUnit(decoded, i, SIZE, SIZE), SIZE, SIZE));
  return { latents: x, images, calls: s.timesteps.length };
}

/** Plain CFG, as the pipeline computed it before prompt editing existed. */
const cfg = ([u, c]: Float32Array[]): Float32Array => u!.map((uv, q) => uv + CFG * (c![q]! - uv));

async function generate(req: Partial<GenerationRequest> & { prompt: string }, hooks: GenerationHooks = {}): Promise<GeneratedImage[]> {
  return new Generator(model).generate({ sampler: 'Euler', steps: 6, cfgScale: CFG, seed: SEED, rng: 'cpu', width: SIZE, height: SIZE, ...req }, hooks);
}

const sameImage = (a: RgbImage, b: RgbImage): boolean => Buffer.from(a.data).equals(Buffer.from(b.data));

const A = 'a red circle on a white background';
const B_TEXT = 'a blue square on a black background';

describe('plain prompts are generated as before', () => {
  it.each([
    ['Euler', 1],
    ['DPM++ 2M Karras', 1],
    ['Euler a', 2],
  ])('%s, batch of %i: the same latents and pixels as the plain CFG loop', async (sampler, batchSize) => {
    const [u, c] = [await encode('blurry'), await encode(A)];
    const seeds = Array.from({ length: batchSize }, (_, i) => SEED + i);
    const ref = await reference({ sampler, steps: 6, seeds, at: () => [u, c], combine: cfg });
    const out = await generate({ prompt: A, negativePrompt: 'blurry', sampler, batchSize });
    expect(out).toHaveLength(batchSize);
    const plane = 4 * LATENT * LATENT;
    out.forEach((img, i) => {
      expect(maxAbsDiff(img.latents, ref.latents.subarray(i * plane, (i + 1) * plane))).toBe(0);
      expect(sameImage(img.image, ref.images[i]!)).toBe(true);
    });
  }, 60_000);

  it('runs the UNet once per step on [uncond, cond], encodes each text once', async () => {
    const unetRun = vi.spyOn(model.unet, 'run');
    const teRun = vi.spyOn(model.textEncoder, 'run');
    try {
      await generate({ prompt: 'a plain cost check prompt', negativePrompt: 'plain cost check negative' });
      expect(unetRun.mock.calls.map(([feeds]) => (feeds.sample as Tensor).shape[0])).toEqual([2, 2, 2, 2, 2, 2]);
      expect(teRun.mock.calls.map(([feeds]) => (feeds.input_ids as Tensor).shape[0])).toEqual([1, 1]);
    } finally {
      unetRun.mockRestore();
      teRun.mockRestore();
    }
  }, 60_000);
});

describe('prompt editing [from:to:when]', () => {
  it('[a:b:0.5] at 6 steps: a for denoiser calls 0-3, b for 4-5 (when = int(0.5*6) = 3)', async () => {
    const [u, a, b] = [await encode(''), await encode(A), await encode(B_TEXT)];
    const ref = await reference({ sampler: 'Euler', steps: 6, seeds: [SEED], at: (i) => [u, i <= 3 ? a : b], combine: cfg });
    expect(ref.calls).toBe(6);
    const [img] = await generate({ prompt: `[${A}:${B_TEXT}:0.5]` });
    expect(maxAbsDiff(img!.latents, ref.latents)).toBe(0);
    expect(sameImage(img!.image, ref.images[0]!)).toBe(true);
    // the switch is visible: neither prompt alone gives this image
    const onlyA = await reference({ sampler: 'Euler', steps: 6, seeds: [SEED], at: () => [u, a], combine: cfg });
    const onlyB = await reference({ sampler: 'Euler', steps: 6, seeds: [SEED], at: () => [u, b], combine: cfg });
    expect(maxAbsDiff(img!.latents, onlyA.latents)).toBeGreaterThan(1e-3);
    expect(maxAbsDiff(img!.latents, onlyB.latents)).toBeGreaterThan(1e-3);
  }, 60_000);

  it('a step number, [to:when] and [from::when] inside a longer prompt', async () => {
    const u = await encode('');
    const texts = [
      // "a [red:blue:2] circle[ on white::4]" -> entries [2, 'a red circle on white'], [4, 'a blue circle on white'], [6, 'a blue circle']
      await encode('a red circle on white'), await encode('a blue circle on white'), await encode('a blue circle'),
    ];
    const at = (i: number) => [u, i <= 2 ? texts[0]! : i <= 4 ? texts[1]! : texts[2]!];
    const ref = await reference({ sampler: 'Euler', steps: 6, seeds: [SEED], at, combine: cfg });
    const [img] = await generate({ prompt: 'a [red:blue:2] circle[ on white::4]' });
    expect(maxAbsDiff(img!.latents, ref.latents)).toBe(0);

    // [to:when] adds text after step `when`: "a circle[, glowing: 3]" -> 'a circle' to call 3, then 'a circle, glowing'
    const [plain, glowing] = [await encode('a circle'), await encode('a circle, glowing')];
    const ref2 = await reference({ sampler: 'Euler', steps: 6, seeds: [SEED], at: (i) => [u, i <= 3 ? plain : glowing], combine: cfg });
    const [img2] = await generate({ prompt: 'a circle[, glowing: 3]' });
    expect(maxAbsDiff(img2!.latents, ref2.latents)).toBe(0);
  }, 60_000);

  it('the texts of a schedule are encoded together: emphasis restores the mean over both', async () => {
    // A1111 encodes [(red:1.5) circle, a blue square] in one call; EmphasisOriginal scales
    // z by mean(z) / mean(z * w), both means over the whole [2, 77, width] batch.
    const tokens = (text: string) => promptChunks(model.tokenizer, text);
    const [red, blue] = [tokens('(red:1.5) circle'), tokens('a blue square')];
    const ids = BigInt64Array.from([...red.ids, ...blue.ids], (v) => BigInt(v));
    const z = (await model.textEncoder.run({ input_ids: new Tensor('i64', [2, 77], ids) }, ['last_hidden_state'])).last_hidden_state!.toFloat32();
    const width = model.prompts.width;
    const w = [...red.weights, ...blue.weights];
    let before = 0;
    let after = 0;
    const scaled = z.map((v, i) => v * w[Math.floor(i / width)]!);
    for (let i = 0; i < z.length; i++) {
      before += z[i]!;
      after += scaled[i]!;
    }
    const factor = Math.fround(Math.fround(before / z.length) / Math.fround(after / z.length));
    const emphasized = scaled.map((v) => v * factor);
    expect(w.filter((x) => x !== 1)).toHaveLength(1); // 'red' is one token at 1.5
    const a = { states: emphasized.slice(0, 77 * width), tokens: 77 };
    const b = { states: emphasized.slice(77 * width), tokens: 77 };
    const [ea, eb] = await model.prompts.encodeSchedule(['(red:1.5) circle', 'a blue square']);
    expect(maxAbsDiff(ea!.states, a.states)).toBeLessThan(1e-6);
    expect(maxAbsDiff(eb!.states, b.states)).toBeLessThan(1e-6);
    // the batch mean differs from the single prompt's own mean
    expect(maxAbsDiff(a.states, (await encode('(red:1.5) circle')).states)).toBeGreaterThan(1e-4);
    const u = await encode('');
    const ref = await reference({ sampler: 'Euler', steps: 6, seeds: [SEED], at: (i) => [u, i <= 3 ? a : b], combine: cfg });
    const [img] = await generate({ prompt: '[(red:1.5) circle:a blue square:0.5]' });
    expect(maxAbsDiff(img!.latents, ref.latents)).toBeLessThan(1e-5);
  }, 60_000);

  it('a schedule text shorter than another gets empty chunks up to its chunk count', async () => {
    const long = `${'green line, yellow dot, '.repeat(14)}purple ring`;
    const [u, empty, short, l] = [await encode(''), await encode(''), await encode(A), await encode(long)];
    expect(l.tokens).toBe(154);
    const width = model.prompts.width;
    const shortPadded = { states: new Float32Array(154 * width), tokens: 154 };
    shortPadded.states.set(short.states);
    shortPadded.states.set(empty.states, 77 * width);
    const ref = await reference({ sampler: 'Euler', steps: 6, seeds: [SEED], at: (i) => [u, i <= 3 ? shortPadded : l], combine: cfg });
    const [img] = await generate({ prompt: `[${A}:${long}:3]` });
    expect(maxAbsDiff(img!.latents, ref.latents)).toBe(0);
  }, 60_000);

  it('the negative prompt follows its own schedule', async () => {
    const [x, y, c] = [await encode('blurry'), await encode('grainy'), await encode(A)];
    const ref = await reference({ sampler: 'Euler', steps: 6, seeds: [SEED], at: (i) => [i <= 2 ? x : y, c], combine: cfg });
    const [img] = await generate({ prompt: A, negativePrompt: '[blurry:grainy:2]' });
    expect(maxAbsDiff(img!.latents, ref.latents)).toBe(0);
  }, 60_000);

  it('img2img: the schedule is for the requested steps, counted from the first step run', async () => {
    // diffusers' img2img runs int(6 * 0.5) = 3 of 6 steps; [a:b:1] -> a at calls 0-1, b at call 2
    const data = new Uint8Array(SIZE * SIZE * 3);
    for (let yy = 0; yy < SIZE; yy++) for (let xx = 0; xx < SIZE; xx++) data.set([xx * 2, yy * 2, 128], (yy * SIZE + xx) * 3);
    const image: RgbImage = { width: SIZE, height: SIZE, data };
    const [u, a, b] = [await encode(''), await encode(A), await encode(B_TEXT)];
    const ref = await reference({ sampler: 'Euler', steps: 6, seeds: [SEED], at: (i) => [u, i <= 1 ? a : b], combine: cfg, img2img: { image, strength: 0.5 } });
    expect(ref.calls).toBe(3);
    const [img] = await generate({ prompt: `[${A}:${B_TEXT}:1]`, initImage: image, strength: 0.5 });
    expect(maxAbsDiff(img!.latents, ref.latents)).toBe(0);
    expect(sameImage(img!.image, ref.images[0]!)).toBe(true);
  }, 60_000);
});

describe('alternation [a|b]', () => {
  it('follows A1111 call by call: a, a, b, a at 4 steps', async () => {
    // schedule [1,'...a'], [2,'...b'], [3,'...a'], [4,'...b']; call 0 and 1 both pick entry 1
    const [u, a, b] = [await encode(''), await encode('a red circle'), await encode('a blue circle')];
    const texts = [a, a, b, a];
    const ref = await reference({ sampler: 'Euler', steps: 4, seeds: [SEED], at: (i) => [u, texts[i]!], combine: cfg });
    const [img] = await generate({ prompt: 'a [red|blue] circle', steps: 4 });
    expect(maxAbsDiff(img!.latents, ref.latents)).toBe(0);
  }, 60_000);

  it('encodes each distinct text once per generation and not again the next time', async () => {
    const teRun = vi.spyOn(model.textEncoder, 'run');
    try {
      await generate({ prompt: 'a [violet kite|amber lantern] sky', negativePrompt: 'smudge [kite|smudge]' });
      // distinct texts: 'a violet kite sky', 'a amber lantern sky' (one call), 'smudge kite', 'smudge smudge' (one call)
      expect(teRun.mock.calls.map(([feeds]) => (feeds.input_ids as Tensor).shape[0])).toEqual([2, 2]);
      teRun.mockClear();
      await generate({ prompt: 'a [violet kite|amber lantern] sky', negativePrompt: 'smudge [kite|smudge]', seed: SEED + 5 });
      expect(teRun).not.toHaveBeenCalled();
    } finally {
      teRun.mockRestore();
    }
  }, 60_000);
});

describe('composable diffusion: AND', () => {
  it('a:1.2 AND b:0.6 = uncond + 1.2*cfg*(cond_a - uncond) + 0.6*cfg*(cond_b - uncond), one UNet call per step', async () => {
    const [u, a, b] = [await encode(''), await encode(A), await encode(B_TEXT)];
    const combine = ([pu, pa, pb]: Float32Array[]) => pu!.map((uv, q) => uv + 1.2 * CFG * (pa![q]! - uv) + 0.6 * CFG * (pb![q]! - uv));
    const ref = await reference({ sampler: 'Euler', steps: 6, seeds: [SEED], at: () => [u, a, b], combine });
    const unetRun = vi.spyOn(model.unet, 'run');
    let img: GeneratedImage | undefined;
    try {
      [img] = await generate({ prompt: `${A} :1.2 AND ${B_TEXT}:0.6` });
      expect(unetRun.mock.calls.map(([feeds]) => (feeds.sample as Tensor).shape[0])).toEqual([3, 3, 3, 3, 3, 3]);
    } finally {
      unetRun.mockRestore();
    }
    expect(maxAbsDiff(img!.latents, ref.latents)).toBeLessThan(1e-5);
    // and it is not the plain prompt
    const plainA = await reference({ sampler: 'Euler', steps: 6, seeds: [SEED], at: () => [u, a], combine: cfg });
    expect(maxAbsDiff(img!.latents, plainA.latents)).toBeGreaterThan(1e-3);
  }, 60_000);

  it('a trailing :weight on a prompt without AND scales its guidance (A1111 reads it as the part weight)', async () => {
    const [u, a] = [await encode(''), await encode(A)];
    const ref = await reference({ sampler: 'Euler', steps: 6, seeds: [SEED], at: () => [u, a], combine: ([pu, pa]) => pu!.map((uv, q) => uv + 0.5 * CFG * (pa![q]! - uv)) });
    const [img] = await generate({ prompt: `${A}:0.5` });
    expect(maxAbsDiff(img!.latents, ref.latents)).toBeLessThan(1e-5);
  }, 60_000);

  it('parts keep their own schedules; parts of different lengths are padded with their last token vector', async () => {
    const long = `${'red circle, blue square, '.repeat(14)}green line`;
    const [u, a, b, l] = [await encode(''), await encode(A), await encode(B_TEXT), await encode(long)];
    expect(l.tokens).toBe(154);
    const width = model.prompts.width;
    const padded = (e: EncodedPrompt): EncodedPrompt => {
      const states = new Float32Array(154 * width);
      states.set(e.states);
      for (let t = 77; t < 154; t++) states.set(e.states.subarray(76 * width, 77 * width), t * width);
      return { states, tokens: 154 };
    };
    const [pa, pb] = [padded(a), padded(b)];
    const combine = ([pu, p1, p2]: Float32Array[]) => pu!.map((uv, q) => uv + 0.8 * CFG * (p1![q]! - uv) + 0.4 * CFG * (p2![q]! - uv));
    const ref = await reference({ sampler: 'Euler', steps: 6, seeds: [SEED], at: (i) => [u, i <= 3 ? pa : pb, l], combine });
    const [img] = await generate({ prompt: `[${A}:${B_TEXT}:0.5]:0.8 AND ${long}:0.4` });
    expect(maxAbsDiff(img!.latents, ref.latents)).toBeLessThan(1e-5);
  }, 60_000);

  it('a guidance hook gets the prediction that plain CFG turns into the AND combination', async () => {
    const hook = {
      combine: ({ uncond, cond, cfgScale, out }: { uncond: Float32Array; cond: Float32Array; cfgScale: number; out: Float32Array }) => {
        for (let q = 0; q < out.length; q++) out[q] = uncond[q]! + cfgScale * (cond[q]! - uncond[q]!);
      },
    };
    const req = { prompt: `${A} AND ${B_TEXT}:0.5` };
    const [withHook] = await generate(req, { guidance: hook });
    const [without] = await generate(req);
    expect(maxAbsDiff(withHook!.latents, without!.latents)).toBeLessThan(1e-4);
    // a plain prompt reaches the hook unchanged
    const [plainHook] = await generate({ prompt: A }, { guidance: hook });
    const [plain] = await generate({ prompt: A });
    expect(maxAbsDiff(plainHook!.latents, plain!.latents)).toBe(0);
  }, 60_000);
});

describe('Safe Latent Diffusion through the guidance hook', () => {
  const concept = 'an image showing a black square';
  const sldHook = () => {
    const sld = new SafeLatentGuidance(SLD_PRESETS.MAX, CFG);
    return {
      conceptPrompt: concept,
      combine: ({ uncond, cond, concept: k, step, out }: { uncond: Float32Array; cond: Float32Array; concept: Float32Array | null; step: number; out: Float32Array }) => {
        sld.step(step, uncond, cond, k!, out);
      },
    };
  };

  it('a plain prompt: the UNet runs [uncond, cond, concept] and SLD combines them', async () => {
    const [u, c, k] = [await encode(''), await encode(A), await encode(concept)];
    const sld = new SafeLatentGuidance(SLD_PRESETS.MAX, CFG);
    const ref = await reference({ sampler: 'Euler', steps: 6, seeds: [SEED], at: () => [u, c, k], combine: ([pu, pc, pk], i) => sld.step(i, pu!, pc!, pk!) });
    const [img] = await generate({ prompt: A }, { guidance: sldHook() });
    expect(maxAbsDiff(img!.latents, ref.latents)).toBe(0);
    const [unguided] = await generate({ prompt: A });
    expect(maxAbsDiff(img!.latents, unguided!.latents)).toBeGreaterThan(1e-3);
  }, 60_000);

  it('an edited AND prompt: SLD steers the combined prediction of the step', async () => {
    const [u, a, b, k] = [await encode(''), await encode(A), await encode(B_TEXT), await encode(concept)];
    const sld = new SafeLatentGuidance(SLD_PRESETS.MAX, CFG);
    const ref = await reference({
      sampler: 'Euler', steps: 6, seeds: [SEED], at: (i) => [u, i <= 2 ? a : b, b, k],
      combine: ([pu, p1, p2, pk], i) => sld.step(i, pu!, pu!.map((uv, q) => uv + 0.7 * (p1![q]! - uv) + 0.5 * (p2![q]! - uv)), pk!),
    });
    const [img] = await generate({ prompt: `[${A}:${B_TEXT}:2]:0.7 AND ${B_TEXT}:0.5` }, { guidance: sldHook() });
    expect(maxAbsDiff(img!.latents, ref.latents)).toBeLessThan(1e-5);
  }, 60_000);
});

describe('malformed syntax', () => {
  it.each([
    ['an unclosed edit', 'a [red:blue circle'],
    ['a | outside brackets', 'a red | blue circle'],
    ['a missing when', 'a [red:blue:] circle'],
  ])('%s is used literally at every step, as A1111 does when its parser fails', async (_, prompt) => {
    const [u, literal] = [await encode(''), await encode(prompt)];
    const ref = await reference({ sampler: 'Euler', steps: 4, seeds: [SEED], at: () => [u, literal], combine: cfg });
    const [img] = await generate({ prompt, steps: 4 });
    expect(maxAbsDiff(img!.latents, ref.latents)).toBe(0);
  }, 60_000);

  it('an emphasis weight that is not a number is an error naming it', async () => {
    const err = await generate({ prompt: '[a (red:1.2.3) circle:a square:0.5]' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RedlineError);
    expect((err as RedlineError).code).toBe('prompt_bad_weight');
    expect((err as RedlineError).message).toContain('1.2.3');
  }, 60_000);
});
