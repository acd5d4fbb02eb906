// The hires fix and the CFG <= 1 uncond skip through the Generator, on the embedded model
// (models/redline-tiny; first pass 64 px, second 128 px, a few steps). Every expected image
// comes from a reference loop written here from the lower-level pieces (sampler, seeded
// noise, UNet, VAE, PromptEncoder.encode): the second pass as A1111 runs it
// (modules/processing.py sample_hr_pass) written out by hand: the upscale (pixel/latent
// doubling by index, or interpolate(), itself checked against hand-worked values in
// interpolate.test.ts), a new per-image generator for the same seeds at the new shape, a
// schedule of int(steps / denoise) steps of which the last `steps` run, and the prompt
// timeline of A1111's hires_steps rules.
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { embeddedAdaptersPath } from '../../src/pipeline/embedded.ts';
import { Generator, type GeneratedImage, type GenerationHooks, type GenerationRequest, type GuidanceHook } from '../../src/pipeline/generate.ts';
import { type RgbImage, rgbToVaeInput, unitToRgb, vaeOutputToUnit } from '../../src/pipeline/image.ts';
import { interpolate } from '../../src/pipeline/interpolate.ts';
import type { StableDiffusionModel } from '../../src/pipeline/model.ts';
import { planGradedGeneration } from '../../src/safety/graded.ts';
import { loadPolicy } from '../../src/safety/policy/policy.ts';
import { SafeLatentGuidance, SLD_PRESETS } from '../../src/safety/sld.ts';
import { create as createSampler, ImageRng, type Sampler } from '../../src/sampling/index.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import type { EncodedPrompt } from '../../src/text/conditioning.ts';
import { maxAbsDiff } from '../helpers/compare.ts';
import { useEmbeddedModel } from '../helpers/embedded-model.ts';
import { batchedUnetPredictions } from '../helpers/reference-unet.ts';

const CFG = 7;
const SEED = 4321;
const A = 'a red circle on a white background';
const B_TEXT = 'a blue square on a black background';

let model: StableDiffusionModel;
useEmbeddedModel((m) => (model = m));

const encode = (text: string): Promise<EncodedPrompt> => model.prompts.encode(text);
const unet = (x: Float32Array, B: number, h: number, w: number, t: number, contexts: EncodedPrompt[]): Promise<Float32Array[]> =>
  batchedUnetPredictions(model, x, B, h, w, t, contexts);

const cfg = (scale: number) => ([u, c]: Float32Array[]): Float32Array => u!.map((uv, q) => uv + scale * (c![q]! - uv));

interface Loop {
  sampler: Sampler;
  rng: ImageRng;
  x: Float32Array;
  B: number;
  size: number[]; // [h, w] in latent units
  at: (i: number) => EncodedPrompt[];
  combine: (preds: Float32Array[], i: number) => Float32Array;
}

async function runLoop(l: Loop): Promise<Float32Array> {
  const [h, w] = l.size as [number, number];
  for (let i = 0; i < l.sampler.timesteps.length; i++) {
    const preds = await unet(l.sampler.scaleModelInput(l.x, i), l.B, h, w, l.sampler.timesteps[i]!, l.at(i));
    l.sampler.step(l.combine(preds, i), i, l.x, l.rng);
  }
  return l.x;
}

/** A txt2img first pass: x_T from each seed's first draw. */
async function firstPass(sampler: string, steps: number, seeds: number[], side: [number, number], at: Loop['at'], combine: Loop['combine']): Promise<Float32Array> {
  const s = createSampler(sampler, { steps });
  const rng = new ImageRng({ seeds, shape: [4, side[0] / 8, side[1] / 8], source: 'cpu' });
  const x = rng.next();
  for (let k = 0; k < x.length; k++) x[k] = x[k]! * s.initNoiseSigma;
  return runLoop({ sampler: s, rng, x, B: seeds.length, size: [side[0] / 8, side[1] / 8], at, combine });
}

async function decode(latents: Float32Array, B: number, h: number, w: number): Promise<RgbImage[]> {
  const sf = model.vaeScalingFactor;
  const decoded = (await model.vaeDecoder.run({ latent: new Tensor('f32', [B, 4, h / 8, w / 8], latents.map((v) => v / sf)) }, ['image'])).image!.toFloat32();
  return Array.from({ length: B }, (_, i) => unitToRgb(vaeOutputToUnit(decoded, i, h, w), h, w));
}

/** Each [h, w] plane doubled by repeating every value (nearest at exactly 2x). */
function doubleByRepeat(x: Float32Array | Uint8Array, planes: number, h: number, w: number, interleaved = 1): typeof x {
  const out = new (x.constructor as Float32ArrayConstructor)(x.length * 4);
  for (let p = 0; p < planes; p++) {
    for (let y = 0; y < 2 * h; y++) {
      for (let xx = 0; xx < 2 * w; xx++) {
        for (let c = 0; c < interleaved; c++) {
          out[(p * 4 * h * w + y * 2 * w + xx) * interleaved + c] = x[(p * h * w + (y >> 1) * w + (xx >> 1)) * interleaved + c]!;
        }
      }
    }
  }
  return out;
}

async function generate(req: Partial<GenerationRequest> & { prompt: string }, hooks: GenerationHooks = {}): Promise<GeneratedImage[]> {
  return new Generator(model).generate({ sampler: 'Euler', steps: 4, cfgScale: CFG, seed: SEED, rng: 'cpu', width: 64, height: 64, ...req }, hooks);
}

const sameImage = (a: RgbImage, b: RgbImage): boolean => a.width === b.width && a.height === b.height && Buffer.from(a.data).equals(Buffer.from(b.data));

describe('hires fix, latent upscalers', () => {
  it('Latent (nearest) x2, Euler a, batch of 2, an edit on the hires timeline: the same latents and pixels as the hand-written two-pass loop', async () => {
    const [u, a, b] = [await encode('blurry'), await encode(A), await encode(B_TEXT)];
    const seeds = [SEED, SEED + 1];
    // First pass, 4 steps: [A:B:5] -> when = min(4, 5): A at every call.
    const x1 = await firstPass('Euler a', 4, seeds, [64, 64], () => [u, a], cfg(CFG));
    // Second pass: 3 steps on a schedule of int(3 / 0.6) = 5; new generators at 16x16.
    const s2 = createSampler('Euler a', { steps: 5, strength: 0.6 });
    expect(s2.timesteps.length).toBe(3);
    const rng2 = new ImageRng({ seeds, shape: [4, 16, 16], source: 'cpu' });
    const x2 = s2.addNoise(doubleByRepeat(x1, 2 * 4, 8, 8) as Float32Array, rng2.next());
    // Hires timeline: when = 5 - 4 = 1 -> schedule [[1, A], [3, B]]: calls 0 and 1 use A, call 2 uses B.
    const ref = await runLoop({ sampler: s2, rng: rng2, x: x2, B: 2, size: [16, 16], at: (i) => [u, i <= 1 ? a : b], combine: cfg(CFG) });
    const refImages = await decode(ref, 2, 128, 128);

    const events: string[] = [];
    const out = await generate(
      { prompt: `[${A}:${B_TEXT}:5]`, negativePrompt: 'blurry', sampler: 'Euler a', batchSize: 2, hires: { scale: 2, upscaler: 'Latent (nearest)', steps: 3, denoise: 0.6 } },
      { onStep: (e) => events.push(`${e.pass}:${e.step}/${e.steps}@${e.width}`) },
    );
    expect(out).toHaveLength(2);
    const plane = 4 * 16 * 16;
    out.forEach((img, i) => {
      expect([img.image.width, img.image.height, img.seed]).toEqual([128, 128, SEED + i]);
      expect(maxAbsDiff(img.latents, ref.subarray(i * plane, (i + 1) * plane))).toBe(0);
      expect(sameImage(img.image, refImages[i]!)).toBe(true);
    });
    expect(events).toEqual(['first:1/4@64', 'first:2/4@64', 'first:3/4@64', 'first:4/4@64', 'hires:1/3@128', 'hires:2/3@128', 'hires:3/3@128']);
  }, 120_000);

  it('Latent (bilinear) with a resize box: cover 128x128 from 64x96, then crop the latents centred', async () => {
    const [u, c] = [await encode(''), await encode(A)];
    const x1 = await firstPass('Euler', 3, [SEED], [96, 64], () => [u, c], cfg(CFG));
    // 64/96 < 128/128: upscale to 128 x 192 (latent 16 x 24), truncate_y = (192 - 128) // 8 = 8 rows: 4 off the top.
    const up = interpolate(x1, { n: 1, c: 4, h: 12, w: 8 }, 24, 16, 'bilinear');
    const cropped = new Float32Array(4 * 16 * 16);
    for (let ch = 0; ch < 4; ch++) for (let y = 0; y < 16; y++) cropped.set(up.subarray(ch * 24 * 16 + (y + 4) * 16, ch * 24 * 16 + (y + 4) * 16 + 16), ch * 256 + y * 16);
    // hr_second_pass_steps 0: the first pass's 3 steps, on int(3 / 0.5) = 6.
    const s2 = createSampler('Euler', { steps: 6, strength: 0.5 });
    const rng2 = new ImageRng({ seeds: [SEED], shape: [4, 16, 16], source: 'cpu' });
    const ref = await runLoop({ sampler: s2, rng: rng2, x: s2.addNoise(cropped, rng2.next()), B: 1, size: [16, 16], at: () => [u, c], combine: cfg(CFG) });

    const [img] = await generate({ prompt: A, steps: 3, width: 64, height: 96, hires: { resizeX: 128, resizeY: 128, upscaler: 'Latent', denoise: 0.5 } });
    expect([img!.image.width, img!.image.height]).toEqual([128, 128]);
    expect(maxAbsDiff(img!.latents, ref)).toBe(0);
  }, 120_000);
});

describe('hires fix with a LoRA', () => {
  it('the adapter stays applied in the second pass (text encoder and UNet)', async () => {
    const adapters = embeddedAdaptersPath();
    if (!adapters) throw new Error('models/Lora is missing: this test needs the embedded demo adapter');
    const path = join(adapters, 'splatter.safetensors');
    // Reference: the model with the adapter set by hand, the two passes written out.
    await model.setAdapters([{ adapter: model.loadAdapter(path), te: 0.8, unet: 0.8 }]);
    const [u, c] = [await encode(''), await encode(A)];
    const x1 = await firstPass('Euler', 2, [SEED], [64, 64], () => [u, c], cfg(CFG));
    const s2 = createSampler('Euler', { steps: 4, strength: 0.5 }); // 2 / 0.5 = 4
    const rng2 = new ImageRng({ seeds: [SEED], shape: [4, 16, 16], source: 'cpu' });
    const ref = await runLoop({ sampler: s2, rng: rng2, x: s2.addNoise(doubleByRepeat(x1, 4, 8, 8) as Float32Array, rng2.next()), B: 1, size: [16, 16], at: () => [u, c], combine: cfg(CFG) });
    await model.setAdapters([]);

    const [img] = await generate({ prompt: A, steps: 2, adapters: [{ path, te: 0.8, unet: 0.8 }], hires: { upscaler: 'Latent (nearest)', denoise: 0.5 } });
    expect(maxAbsDiff(img!.latents, ref)).toBe(0);
    const [plain] = await generate({ prompt: A, steps: 2, hires: { upscaler: 'Latent (nearest)', denoise: 0.5 } });
    expect(maxAbsDiff(img!.latents, plain!.latents)).toBeGreaterThan(1e-3);
  }, 120_000);
});

describe('hires fix, image upscalers', () => {
  it('Nearest x2, DDIM: decode, 8-bit (truncated), repeat pixels, VAE-encode, then img2img from the new generators', async () => {
    const [u, c] = [await encode(''), await encode(A)];
    const x1 = await firstPass('DDIM', 3, [SEED], [64, 64], () => [u, c], cfg(CFG));
    const sf = model.vaeScalingFactor;
    const decoded = (await model.vaeDecoder.run({ latent: new Tensor('f32', [1, 4, 8, 8], x1.map((v) => v / sf)) }, ['image'])).image!.toFloat32();
    const unit = vaeOutputToUnit(decoded, 0, 64, 64);
    const rgb = new Uint8Array(64 * 64 * 3);
    for (let ch = 0; ch < 3; ch++) for (let p = 0; p < 64 * 64; p++) rgb[p * 3 + ch] = Math.trunc(Math.fround(255 * unit[ch * 4096 + p]!)); // numpy astype(uint8)
    const big: RgbImage = { width: 128, height: 128, data: doubleByRepeat(rgb, 1, 64, 64, 3) as Uint8Array };
    const enc = await model.vaeEncoder();
    const post = await enc.run({ image: new Tensor('f32', [1, 3, 128, 128], rgbToVaeInput(big)) }, ['mean', 'logvar']);
    const mean = post.mean!.toFloat32();
    const logvar = post.logvar!.toFloat32();
    const s2 = createSampler('DDIM', { steps: 4, strength: 0.75 }); // 3 / 0.75 = 4
    expect(s2.timesteps.length).toBe(3);
    const rng2 = new ImageRng({ seeds: [SEED], shape: [4, 16, 16], source: 'cpu' });
    const eps = rng2.next();
    const clean = mean.map((m, k) => sf * (m + Math.exp(0.5 * logvar[k]!) * eps[k]!));
    const ref = await runLoop({ sampler: s2, rng: rng2, x: s2.addNoise(clean, rng2.next()), B: 1, size: [16, 16], at: () => [u, c], combine: cfg(CFG) });

    const [img] = await generate({ prompt: A, sampler: 'DDIM', steps: 3, hires: { scale: 2, upscaler: 'Nearest', denoise: 0.75 } });
    expect(maxAbsDiff(img!.latents, ref)).toBe(0);
    expect(sameImage(img!.image, (await decode(ref, 1, 128, 128))[0]!)).toBe(true);
  }, 120_000);

  it('Lanczos gives a different start than Nearest (the resize kernel is used)', async () => {
    const [lanczos] = await generate({ prompt: A, steps: 2, hires: { upscaler: 'Lanczos', steps: 1, denoise: 0.3 } });
    const [nearest] = await generate({ prompt: A, steps: 2, hires: { upscaler: 'Nearest', steps: 1, denoise: 0.3 } });
    expect(maxAbsDiff(lanczos!.latents, nearest!.latents)).toBeGreaterThan(1e-3);
  }, 120_000);
});

/** Total UNet batch rows per call, recorded while `fn` runs. */
async function unetRows<T>(fn: () => Promise<T>): Promise<{ result: T; rows: number[] }> {
  const spy = vi.spyOn(model.unet, 'run');
  try {
    const result = await fn();
    return { result, rows: spy.mock.calls.map(([feeds]) => (feeds as Record<string, Tensor>).sample!.shape[0]!) };
  } finally {
    spy.mockRestore();
  }
}

describe('CFG <= 1 skips the negative prompt\'s UNet pass', () => {
  it('CFG 1: the prompt\'s prediction alone, one UNet row per image and step', async () => {
    const c = await encode(A);
    const ref = await firstPass('Euler', 3, [SEED], [64, 64], () => [c], ([pc]) => pc!);
    const { result: [img], rows } = await unetRows(() => generate({ prompt: A, negativePrompt: 'blurry', steps: 3, cfgScale: 1 }));
    expect(maxAbsDiff(img!.latents, ref)).toBe(0);
    expect(rows).toEqual([1, 1, 1]);
  }, 60_000);

  it('CFG 0.5 is no guidance either (diffusers: guidance only above 1), the same image as CFG 1', async () => {
    const [half] = await generate({ prompt: A, negativePrompt: 'blurry', steps: 3, cfgScale: 0.5 });
    const [one] = await generate({ prompt: A, negativePrompt: 'blurry', steps: 3, cfgScale: 1 });
    expect(maxAbsDiff(half!.latents, one!.latents)).toBe(0);
  }, 60_000);

  it('an AND prompt at CFG 1: the first part stands in for the uncond (A1111\'s skipped-uncond combination)', async () => {
    const [a, b] = [await encode(A), await encode(B_TEXT)];
    const ref = await firstPass('Euler', 3, [SEED], [64, 64], () => [a, b], ([pa, pb]) => pa!.map((v, q) => v + 0.5 * (pb![q]! - v)));
    const [img] = await generate({ prompt: `${A} AND ${B_TEXT}:0.5`, steps: 3, cfgScale: 1 });
    expect(maxAbsDiff(img!.latents, ref)).toBeLessThan(1e-6);
  }, 60_000);

  it('CFG above 1 still runs uncond and cond together', async () => {
    const { rows } = await unetRows(() => generate({ prompt: A, negativePrompt: 'blurry', steps: 2, cfgScale: 1.5 }));
    expect(rows).toEqual([2, 2]);
  }, 60_000);
});

describe('a guidance hook (safety) keeps the uncond pass at any CFG', () => {
  const concept = 'an image showing a green triangle';
  function sldHook(seen: string[]): GuidanceHook {
    let sld = new SafeLatentGuidance(SLD_PRESETS.MAX, 1);
    return {
      conceptPrompt: concept,
      combine: ({ uncond, cond, concept: k, cfgScale, step, pass, out }) => {
        seen.push(`${pass}:${step}`);
        if (step === 0) sld = new SafeLatentGuidance(SLD_PRESETS.MAX, cfgScale);
        sld.step(step, uncond, cond, k!, out);
      },
    };
  }

  it('CFG 1 with a hook: uncond, cond and concept all run and reach the hook, which decides the prediction', async () => {
    const [u, c, k] = [await encode('blurry'), await encode(A), await encode(concept)];
    const sld = new SafeLatentGuidance(SLD_PRESETS.MAX, 1);
    const ref = await firstPass('Euler', 3, [SEED], [64, 64], () => [u, c, k], ([pu, pc, pk], i) => sld.step(i, pu!, pc!, pk!));
    const seen: string[] = [];
    const { result: [img], rows } = await unetRows(() => generate({ prompt: A, negativePrompt: 'blurry', steps: 3, cfgScale: 1 }, { guidance: sldHook(seen) }));
    expect(maxAbsDiff(img!.latents, ref)).toBe(0);
    // 3 rows per step (uncond, prompt and concept; one call when their token lengths match)
    expect(rows.reduce((s, n) => s + n, 0)).toBe(9);
    expect(seen).toEqual(['first:0', 'first:1', 'first:2']);
  }, 60_000);

  it('the safety layer\'s own hook (a clamped graded request) at CFG 1: the uncond pass runs in both passes', async () => {
    // Asked for level 3, clamped to 1: the default policy's plan guides with SLD.
    const plan = planGradedGeneration(loadPolicy(), 3, 1, [], 1);
    const hook = plan.guidance();
    expect(hook).toBeDefined();
    const { rows } = await unetRows(() => generate({ prompt: A, steps: 2, cfgScale: plan.cfgScale, hires: { steps: 2, denoise: 0.5 } }, { guidance: hook! }));
    // uncond + prompt + safety concept, every step of both passes
    expect(rows.reduce((s, n) => s + n, 0)).toBe(3 * 4);
  }, 60_000);

  it('with a hires fix the hook steers the second pass too, its steps counted from 0', async () => {
    const seen: string[] = [];
    const { rows } = await unetRows(() => generate({ prompt: A, steps: 2, cfgScale: 1, hires: { steps: 2, denoise: 0.5 } }, { guidance: sldHook(seen) }));
    expect(seen).toEqual(['first:0', 'first:1', 'hires:0', 'hires:1']);
    expect(rows.reduce((s, n) => s + n, 0)).toBe(12);
  }, 60_000);
});

describe('hires prompts and sampler (A1111 hr_prompt, hr_negative_prompt, hr_sampler_name)', () => {
  it('the second pass runs its own prompt, negative prompt and sampler: the same latents as the hand-written two passes', async () => {
    const [u, a, fog, b] = [await encode('blurry'), await encode(A), await encode('fog'), await encode(B_TEXT)];
    const x1 = await firstPass('Euler', 3, [SEED], [64, 64], () => [u, a], cfg(CFG));
    // Second pass: Euler a, 2 steps on a schedule of int(2 / 0.5) = 4, prompt B, negative "fog".
    const s2 = createSampler('Euler a', { steps: 4, strength: 0.5 });
    expect(s2.timesteps.length).toBe(2);
    const rng2 = new ImageRng({ seeds: [SEED], shape: [4, 16, 16], source: 'cpu' });
    const x2 = s2.addNoise(doubleByRepeat(x1, 4, 8, 8) as Float32Array, rng2.next());
    const ref = await runLoop({ sampler: s2, rng: rng2, x: x2, B: 1, size: [16, 16], at: () => [fog, b], combine: cfg(CFG) });

    const hires = { upscaler: 'Latent (nearest)', steps: 2, denoise: 0.5 };
    const [img] = await generate({ prompt: A, negativePrompt: 'blurry', steps: 3, hires: { ...hires, prompt: B_TEXT, negativePrompt: 'fog', sampler: 'Euler a' } });
    expect(maxAbsDiff(img!.latents, ref)).toBe(0);
    // Empty hires prompts and "Use same sampler" are the first pass's (A1111's defaults).
    const [same] = await generate({ prompt: A, negativePrompt: 'blurry', steps: 3, hires: { ...hires, prompt: '', negativePrompt: null, sampler: 'Use same sampler' } });
    const [plain] = await generate({ prompt: A, negativePrompt: 'blurry', steps: 3, hires });
    expect(maxAbsDiff(same!.latents, plain!.latents)).toBe(0);
    expect(maxAbsDiff(plain!.latents, ref)).toBeGreaterThan(1e-3);
  }, 120_000);
});

describe('pad_cond_uncond (A1111\'s "Pad prompt/negative prompt")', () => {
  // 40 x "red circle," is over 75 tokens: two chunks (154 tokens) against the negative's one.
  const LONG = Array.from({ length: 40 }, () => 'red circle').join(', ');
  const append = (e: EncodedPrompt, empty: EncodedPrompt): EncodedPrompt => {
    const states = new Float32Array(e.states.length + empty.states.length);
    states.set(e.states);
    states.set(empty.states, e.states.length);
    return { states, tokens: e.tokens + empty.tokens };
  };

  it('a long prompt, a short negative: the negative gets the empty prompt\'s chunk appended and both run in one UNet call', async () => {
    const [u, c, empty] = [await encode('blurry'), await encode(LONG), await model.basePrompts.encode('')];
    expect([u.tokens, c.tokens, empty.tokens]).toEqual([77, 154, 77]);
    const ref = await firstPass('Euler', 3, [SEED], [64, 64], () => [append(u, empty), c], cfg(CFG));
    const { result: [img], rows } = await unetRows(() => generate({ prompt: LONG, negativePrompt: 'blurry', steps: 3, padCondUncond: true }));
    expect(maxAbsDiff(img!.latents, ref)).toBe(0);
    expect(rows).toEqual([2, 2, 2]);
    expect(img!.padConds).toBe(true);
    // Off (A1111's default): separate calls, another image.
    const { result: [off], rows: offRows } = await unetRows(() => generate({ prompt: LONG, negativePrompt: 'blurry', steps: 3 }));
    expect(offRows).toEqual([1, 1, 1, 1, 1, 1]);
    expect(off!.padConds).toBe(false);
    expect(maxAbsDiff(off!.latents, img!.latents)).toBeGreaterThan(1e-4);
  }, 120_000);

  it('a long negative, a short prompt: the prompt is padded', async () => {
    const [u, c, empty] = [await encode(LONG), await encode(A), await model.basePrompts.encode('')];
    const ref = await firstPass('Euler', 2, [SEED], [64, 64], () => [u, append(c, empty)], cfg(CFG));
    const [img] = await generate({ prompt: A, negativePrompt: LONG, steps: 2, padCondUncond: true });
    expect(maxAbsDiff(img!.latents, ref)).toBe(0);
  }, 120_000);

  it('equal lengths: nothing to pad, the same image as without the option; a hires prompt that is longer pads the second pass', async () => {
    const [on] = await generate({ prompt: A, negativePrompt: 'blurry', steps: 2, padCondUncond: true });
    const [off] = await generate({ prompt: A, negativePrompt: 'blurry', steps: 2 });
    expect(maxAbsDiff(on!.latents, off!.latents)).toBe(0);
    expect(on!.padConds).toBe(false);
    const [hr] = await generate({ prompt: A, negativePrompt: 'blurry', steps: 1, padCondUncond: true, hires: { prompt: LONG, steps: 1, denoise: 0.5 } });
    expect(hr!.padConds).toBe(true);
  }, 120_000);
});
