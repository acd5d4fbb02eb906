// txt2img and img2img: prompt -> text encoder -> sampler loop with classifier-free
// guidance -> VAE decode, the way diffusers' StableDiffusion(Img2Img)Pipeline computes it,
// with A1111's seeds (image i of a batch uses seed + i, its own noise stream) and prompt
// syntax, including prompt editing [a:b:when], alternation [a|b] and composable AND in
// the prompt, and editing/alternation in the negative prompt (prompt-conditioning.ts).
// A guidance hook lets the safety layer steer each step (Safe Latent Diffusion).
import { RedlineError } from '../errors.ts';
import { create as createSampler, ImageRng, resolveSamplerName, type RngSource, type Sampler, type SamplerName } from '../sampling/index.ts';
import { Tensor } from '../tensor/tensor.ts';
import type { EncodedPrompt } from '../text/conditioning.ts';
import { extractExtraNetworks, type LoraTag } from '../text/prompt-parser.ts';
import { type RgbImage, rgbToVaeInput, unitToRgb, vaeOutputToUnit } from './image.ts';
import type { StableDiffusionModel } from './model.ts';
import { composeGuidance, effectiveCond, encodePromptConditioning, type StepConditioning, stepConditionings } from './prompt-conditioning.ts';

export interface GenerationRequest {
  prompt: string;
  negativePrompt?: string;
  /** A1111 sampler name (or a diffusers-style alias). Default 'Euler a' as A1111. */
  sampler?: string;
  steps?: number;
  cfgScale?: number;
  /** -1 or undefined: a random seed. */
  seed?: number;
  /** A1111's seed mode: 'gpu' (torch CUDA generator, A1111's default) or 'cpu'. */
  rng?: RngSource;
  width?: number;
  height?: number;
  /** Images per batch (run together through the UNet). */
  batchSize?: number;
  /** Batches run one after another; batch b starts at seed + b * batchSize. */
  batchCount?: number;
  clipSkip?: number;
  /** DDIM eta (0 = deterministic). */
  eta?: number;
  /** img2img: the init image, resized to width x height by the caller. */
  initImage?: RgbImage;
  /** img2img denoising strength in (0, 1]. */
  strength?: number;
  /** LoRA/LyCORIS files to apply, each with a text-encoder and a UNet strength. */
  adapters?: AdapterRequest[];
}

export interface AdapterRequest {
  path: string;
  te: number;
  unet: number;
}

export interface ResolvedRequest {
  prompt: string;
  negativePrompt: string;
  sampler: SamplerName;
  steps: number;
  cfgScale: number;
  seed: number;
  rng: RngSource;
  width: number;
  height: number;
  batchSize: number;
  batchCount: number;
  clipSkip: number;
  eta: number;
  strength: number | undefined;
  /** `<lora:...>` tags found in the prompts (removed from the text). */
  loraTags: LoraTag[];
  initImage?: RgbImage;
  adapters: AdapterRequest[];
}

export interface StepEvent {
  batch: number;
  step: number;
  steps: number;
  /** The current x0 estimate (latent), for previews. */
  predOriginal: Float32Array | null;
}

/** Per-step guidance hook: receives the noise predictions for the batch and writes the
 * combined prediction (Safe Latent Diffusion lives in safety/ and plugs in here). */
export interface GuidanceHook {
  /** A third conditioning the UNet also runs on every step (SLD's safety concept). */
  conceptPrompt?: string;
  combine(args: {
    uncond: Float32Array;
    /** The prompt's prediction; for an AND prompt, uncond + sum_k w_k * (cond_k - uncond),
     * the prediction that plain CFG turns into A1111's composable combination. */
    cond: Float32Array;
    /** Prediction for conceptPrompt, when one is set. */
    concept: Float32Array | null;
    cfgScale: number;
    step: number;
    out: Float32Array;
  }): Promise<void> | void;
}

export interface GenerationHooks {
  onStep?: (e: StepEvent) => void;
  signal?: AbortSignal;
  guidance?: GuidanceHook;
}

export interface GeneratedImage {
  image: RgbImage;
  /** The decoded image in [0, 1], NCHW (float, before 8-bit rounding). */
  unit: Float32Array;
  /** Final latents of this image (before 1/scaling). */
  latents: Float32Array;
  seed: number;
  /** Index within the whole request (batch * batchSize + i). */
  index: number;
}

export const MAX_SIDE = 2048;

function int(v: number | undefined, fallback: number, name: string, min: number, max: number): number {
  const x = v ?? fallback;
  if (!Number.isInteger(x) || x < min || x > max) {
    throw new RedlineError('bad_option', `${name} must be a whole number from ${min} to ${max}, got ${String(v)}.`);
  }
  return x;
}

export function resolveRequest(req: GenerationRequest): ResolvedRequest {
  if (typeof req.prompt !== 'string') throw new RedlineError('bad_option', 'A prompt is required.');
  const pos = extractExtraNetworks(req.prompt);
  const neg = extractExtraNetworks(req.negativePrompt ?? '');
  const width = int(req.width, 512, 'width', 64, MAX_SIDE);
  const height = int(req.height, 512, 'height', 64, MAX_SIDE);
  for (const [n, v] of [['width', width], ['height', height]] as const) {
    if (v % 8 !== 0) throw new RedlineError('bad_option', `${n} ${v} is not a multiple of 8.`, `Use ${Math.round(v / 8) * 8}.`);
  }
  const cfgScale = req.cfgScale ?? 7;
  if (!Number.isFinite(cfgScale) || cfgScale < 0 || cfgScale > 30) throw new RedlineError('bad_option', `CFG scale must be from 0 to 30, got ${cfgScale}.`);
  let seed = req.seed ?? -1;
  if (seed === -1) seed = Math.floor(Math.random() * 4294967295);
  if (!Number.isSafeInteger(seed) || seed < 0) throw new RedlineError('bad_seed', `Seed must be -1 (random) or a whole number >= 0, got ${req.seed}.`);
  const strength = req.initImage ? (req.strength ?? 0.75) : undefined;
  if (strength !== undefined && !(strength > 0 && strength <= 1)) {
    throw new RedlineError('bad_option', `Denoising strength must be in (0, 1], got ${strength}.`);
  }
  const eta = req.eta ?? 0;
  if (!Number.isFinite(eta) || eta < 0 || eta > 1) throw new RedlineError('bad_option', `eta must be from 0 to 1, got ${eta}.`);
  return {
    prompt: pos.prompt,
    negativePrompt: neg.prompt,
    sampler: resolveSamplerName(req.sampler ?? 'Euler a'),
    steps: int(req.steps, 20, 'steps', 1, 150),
    cfgScale,
    seed,
    rng: req.rng ?? 'gpu',
    width,
    height,
    batchSize: int(req.batchSize, 1, 'batch size', 1, 16),
    batchCount: int(req.batchCount, 1, 'batch count', 1, 100),
    clipSkip: int(req.clipSkip, 1, 'clip skip', 1, 12),
    eta,
    strength,
    loraTags: [...pos.loras, ...neg.loras],
    ...(req.initImage ? { initImage: req.initImage } : {}),
    adapters: (req.adapters ?? []).map((a) => {
      for (const [k, v] of [['te', a.te], ['unet', a.unet]] as const) {
        if (!Number.isFinite(v) || Math.abs(v) > 4) throw new RedlineError('bad_option', `Adapter ${a.path}: ${k} strength must be a number from -4 to 4, got ${v}.`);
      }
      return { ...a };
    }),
  };
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new RedlineError('cancelled', 'The generation was cancelled.');
}

/** Repeats one encoded prompt `n` times along the batch axis. */
function repeatBatch(e: EncodedPrompt, n: number): Float32Array {
  const out = new Float32Array(e.states.length * n);
  for (let i = 0; i < n; i++) out.set(e.states, i * e.states.length);
  return out;
}

export class Generator {
  constructor(readonly model: StableDiffusionModel) {}

  /** Runs a whole request: batchCount batches of batchSize images. */
  async generate(req: GenerationRequest | ResolvedRequest, hooks: GenerationHooks = {}): Promise<GeneratedImage[]> {
    const r = 'loraTags' in req ? req : resolveRequest(req);
    const { model } = this;
    await model.setAdapters(r.adapters.map((a) => ({ adapter: model.loadAdapter(a.path), te: a.te, unet: a.unet })));
    const conditioning = await encodePromptConditioning(model.prompts, r.prompt, r.negativePrompt, r.steps, r.clipSkip);
    const concept = hooks.guidance?.conceptPrompt !== undefined ? (await model.prompts.encodeSchedule([hooks.guidance.conceptPrompt], r.clipSkip))[0]! : null;
    const sampler = this.createSampler(r);
    // Every batch runs the same denoiser calls; A1111 counts them from 0 in each run.
    const perStep = stepConditionings(conditioning, sampler.timesteps.length, model.prompts.width);
    let initLatentsMean: Float32Array | null = null;
    let initLatentsLogvar: Float32Array | null = null;
    if (r.strength !== undefined) {
      [initLatentsMean, initLatentsLogvar] = await this.encodeInit(r);
    }
    const images: GeneratedImage[] = [];
    for (let b = 0; b < r.batchCount; b++) {
      throwIfAborted(hooks.signal);
      const seeds = Array.from({ length: r.batchSize }, (_, i) => r.seed + b * r.batchSize + i);
      const latents = await this.sample(r, b, seeds, perStep, concept, initLatentsMean, initLatentsLogvar, hooks);
      const decoded = await this.decode(latents, r);
      const plane = 4 * (r.height / 8) * (r.width / 8);
      seeds.forEach((seed, i) => {
        const unit = vaeOutputToUnit(decoded, i, r.height, r.width);
        images.push({
          image: unitToRgb(unit, r.height, r.width),
          unit,
          latents: latents.slice(i * plane, (i + 1) * plane),
          seed,
          index: b * r.batchSize + i,
        });
      });
    }
    return images;
  }

  /** img2img: the init image's latent posterior (mean, logvar), one image. */
  private async encodeInit(r: ResolvedRequest): Promise<[Float32Array, Float32Array]> {
    const img = r.initImage;
    if (!img) throw new RedlineError('bad_option', 'img2img needs an init image.');
    if (img.width !== r.width || img.height !== r.height) {
      throw new RedlineError('bad_option', `The init image is ${img.width}x${img.height}; resize it to ${r.width}x${r.height} first.`);
    }
    const encoder = await this.model.vaeEncoder();
    const out = await encoder.run({ image: new Tensor('f32', [1, 3, r.height, r.width], rgbToVaeInput(img)) }, ['mean', 'logvar']);
    return [out.mean!.toFloat32(), out.logvar!.toFloat32()];
  }

  private createSampler(r: ResolvedRequest): Sampler {
    return createSampler(r.sampler, {
      steps: r.steps,
      ...(r.strength !== undefined ? { strength: r.strength } : {}),
      ...(r.sampler === 'DDIM' ? { eta: r.eta } : {}),
    });
  }

  /** The sampler loop for one batch; returns the final latents [B, 4, h, w]. */
  private async sample(
    r: ResolvedRequest,
    batch: number,
    seeds: number[],
    /** What the UNet runs on at each denoiser call. */
    perStep: StepConditioning[],
    /** SLD's safety concept, when a guidance hook sets one. */
    concept: EncodedPrompt | null,
    initMean: Float32Array | null,
    initLogvar: Float32Array | null,
    hooks: GenerationHooks,
  ): Promise<Float32Array> {
    const B = seeds.length;
    const h = r.height / 8;
    const w = r.width / 8;
    const perImage = 4 * h * w;
    const sampler = this.createSampler(r);
    const rng = new ImageRng({ seeds, shape: [4, h, w], source: r.rng });
    let latents: Float32Array;
    if (initMean && initLogvar) {
      // diffusers img2img: posterior sample (first draw), then add_noise (second draw)
      const eps = rng.next();
      const clean = new Float32Array(B * perImage);
      const sf = this.model.vaeScalingFactor;
      for (let i = 0; i < B; i++) {
        for (let k = 0; k < perImage; k++) {
          const std = Math.exp(0.5 * initLogvar[k]!);
          clean[i * perImage + k] = sf * (initMean[k]! + std * eps[i * perImage + k]!);
        }
      }
      latents = sampler.addNoise(clean, rng.next());
    } else {
      latents = rng.next();
      const s = sampler.initNoiseSigma;
      if (s !== 1) for (let k = 0; k < latents.length; k++) latents[k] = Math.fround(latents[k]! * s);
    }
    const eps = new Float32Array(B * perImage);
    const steps = sampler.timesteps.length;
    for (let i = 0; i < steps; i++) {
      throwIfAborted(hooks.signal);
      const t = sampler.timesteps[i]!;
      const x = sampler.scaleModelInput(latents, i);
      const s = perStep[i]!;
      // uncond first, as diffusers batches it: a plain prompt's UNet input, hence its image, is unchanged.
      const preds = await this.predict(x, B, h, w, t, [s.uncond, ...s.conds, ...(concept ? [concept] : [])]);
      const u = preds[0]!;
      const conds = preds.slice(1, 1 + s.conds.length);
      if (hooks.guidance) {
        const k = concept ? preds[1 + s.conds.length]! : null;
        await hooks.guidance.combine({ uncond: u, cond: effectiveCond(u, conds, s), concept: k, cfgScale: r.cfgScale, step: i, out: eps });
      } else {
        composeGuidance(u, conds, s, r.cfgScale, eps);
      }
      sampler.step(eps, i, latents, rng);
      hooks.onStep?.({ batch, step: i + 1, steps, predOriginal: sampler.predOriginalSample });
    }
    return latents;
  }

  /**
   * Noise predictions of the batch under each conditioning. Conditionings of the same
   * token length share one UNet call (batch stacked: uncond first, as diffusers);
   * prompts of different chunk counts run separately, as A1111 does.
   */
  private async predict(x: Float32Array, B: number, h: number, w: number, t: number, conditions: EncodedPrompt[]): Promise<Float32Array[]> {
    const width = this.model.prompts.width;
    const per = x.length;
    const results: Float32Array[] = new Array(conditions.length);
    const groups = new Map<number, number[]>();
    conditions.forEach((c, i) => groups.set(c.tokens, [...(groups.get(c.tokens) ?? []), i]));
    for (const [tokens, members] of groups) {
      const n = members.length * B;
      const sample = new Float32Array(n * (per / B));
      const context = new Float32Array(n * tokens * width);
      members.forEach((ci, j) => {
        sample.set(x, j * per);
        context.set(repeatBatch(conditions[ci]!, B), j * B * tokens * width);
      });
      const out = await this.model.unet.run({
        sample: new Tensor('f32', [n, 4, h, w], sample),
        timestep: new Tensor('f32', [n], new Float32Array(n).fill(t)),
        encoder_hidden_states: new Tensor('f32', [n, tokens, width], context),
      }, ['out_sample']);
      const pred = out.out_sample!.toFloat32();
      members.forEach((ci, j) => {
        results[ci] = pred.subarray(j * per, (j + 1) * per);
      });
    }
    return results;
  }

  private async decode(latents: Float32Array, r: ResolvedRequest): Promise<Float32Array> {
    const sf = this.model.vaeScalingFactor;
    const z = new Float32Array(latents.length);
    for (let k = 0; k < z.length; k++) z[k] = latents[k]! / sf;
    const n = latents.length / (4 * (r.height / 8) * (r.width / 8));
    const out = await this.model.vaeDecoder.run({ latent: new Tensor('f32', [n, 4, r.height / 8, r.width / 8], z) }, ['image']);
    return out.image!.toFloat32();
  }
}

