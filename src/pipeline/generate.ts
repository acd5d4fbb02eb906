// txt2img and img2img: prompt -> text encoder -> sampler loop with classifier-free
// guidance -> VAE decode, the way diffusers' StableDiffusion(Img2Img)Pipeline computes it,
// with A1111's seeds (image i of a batch uses seed + i, its own noise stream) and prompt
// syntax, including prompt editing [a:b:when], alternation [a|b] and composable AND in
// the prompt, and editing/alternation in the negative prompt (prompt-conditioning.ts).
// A guidance hook lets the safety layer steer each step (Safe Latent Diffusion).
// A1111's hires fix adds a second, img2img pass at a larger size (hires.ts). At CFG scale
// <= 1 the negative prompt's UNet pass is skipped (diffusers: no classifier-free guidance
// unless guidance_scale > 1), unless a guidance hook is set: the safety layer's guidance
// needs the unconditional prediction, and no request field may switch it off.
import { RedlineError } from '../errors.ts';
import { create as createSampler, ImageRng, resolveSamplerName, type RngSource, type Sampler, type SamplerName } from '../sampling/index.ts';
import { Tensor } from '../tensor/tensor.ts';
import type { EncodedPrompt } from '../text/conditioning.ts';
import { type ExtractedNetworks, extractExtraNetworks, type LoraTag } from '../text/prompt-parser.ts';
import { cropLatents, type HiresRequest, hiresStrength, type ResolvedHires, resolveHires, upscaleImage, upscaleLatents } from './hires.ts';
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
  /** A1111's hires fix (txt2img only): width x height is the first pass. */
  hires?: HiresRequest;
  /**
   * A1111's "Pad prompt/negative prompt" option (pad_cond_uncond, off by default): when
   * the prompt and the negative prompt encode to different lengths, the shorter gets the
   * empty prompt's encoding appended so both run in one UNet batch. It changes the image.
   */
  padCondUncond?: boolean;
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
  /** The hires fix's second pass, when asked for; width/height stay the first pass's. */
  hires?: ResolvedHires;
  /** The second pass's prompts, extra-network tags removed (the first pass's when hr_prompt was empty). */
  hiresPrompts?: { prompt: string; negativePrompt: string };
  padCondUncond: boolean;
}

export interface StepEvent {
  batch: number;
  /** 'hires' for a hires fix's second pass; its steps count from 1 again. */
  pass: 'first' | 'hires';
  /** Image size of this pass (predOriginal is its latent, [B, 4, height/8, width/8]). */
  width: number;
  height: number;
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
    /** Step within this pass, from 0; a hires fix's second pass starts at 0 again, at its own size. */
    step: number;
    pass: 'first' | 'hires';
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
  /** pad_cond_uncond padded the last denoiser call of a pass (A1111 then writes "Pad conds: True"). */
  padConds: boolean;
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
  if (req.hires && req.initImage) {
    throw new RedlineError('bad_option', 'The hires fix is a txt2img option; it cannot be combined with an init image.',
      'For img2img, generate at the size you want, or run img2img again on the upscaled result.');
  }
  const steps = int(req.steps, 20, 'steps', 1, 150);
  const hires = req.hires ? resolveHires(req.hires, { width, height, steps }, MAX_SIDE) : undefined;
  const hiresPrompts = hires ? hiresPassPrompts(hires, pos, neg) : undefined;
  return {
    prompt: pos.prompt,
    negativePrompt: neg.prompt,
    sampler: resolveSamplerName(req.sampler ?? 'Euler a'),
    steps,
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
    ...(hires ? { hires } : {}),
    ...(hiresPrompts ? { hiresPrompts } : {}),
    padCondUncond: req.padCondUncond ?? false,
  };
}

const loraKey = (t: LoraTag): string => `${t.name}\u0000${t.te}\u0000${t.unet}\u0000${t.dyn ?? ''}`;

/**
 * The second pass's prompts without their extra-network tags. A1111 activates the LoRAs of
 * hr_prompt for the second pass (other ones off); Redline keeps the first pass's adapters,
 * graded as the safety layer set them, so a hires prompt must name the same LoRAs.
 */
function hiresPassPrompts(hr: ResolvedHires, pos: ExtractedNetworks, neg: ExtractedNetworks): { prompt: string; negativePrompt: string } {
  const hrPos = hr.prompt === null ? pos : extractExtraNetworks(hr.prompt);
  const hrNeg = hr.negativePrompt === null ? neg : extractExtraNetworks(hr.negativePrompt);
  const tags = (e: ExtractedNetworks[]) => e.flatMap((x) => x.loras);
  const names = (t: LoraTag[]) => (t.length ? t.map((x) => x.tag).join(' ') : 'none');
  const first = tags([pos, neg]);
  const second = tags([hrPos, hrNeg]);
  if ([...first.map(loraKey)].sort().join('\u0001') !== [...second.map(loraKey)].sort().join('\u0001')) {
    throw new RedlineError('hires_lora_mismatch',
      `The hires prompts name other LoRAs (${names(second)}) than the prompts (${names(first)}).`,
      'Redline runs the hires pass with the first pass\'s LoRAs: repeat the same <lora:...> tags in the hires prompt, or leave it empty to use the prompt.');
  }
  return { prompt: hrPos.prompt, negativePrompt: hrNeg.prompt };
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

/** One sampling pass: the first (txt2img/img2img) or a hires fix's second. */
interface Pass {
  kind: 'first' | 'hires';
  /** The hires fix's settings, on its second pass. */
  hires: ResolvedHires | null;
  width: number;
  height: number;
  /** A fresh sampler run (samplers keep per-run state). */
  newSampler: () => Sampler;
  /** What the UNet runs on at each denoiser call. */
  perStep: StepConditioning[];
  /** A1111's flag after a sampler run: pad_cond_uncond padded its last denoiser call. */
  paddedLast: boolean;
}

/** Where a pass's latents start from. */
type PassStart =
  | { kind: 'noise' }
  /** img2img: VAE posteriors to sample; one shared by the batch, or one per image. */
  | { kind: 'posterior'; mean: Float32Array; logvar: Float32Array; perImage: boolean }
  /** Clean latents of the batch to noise (the hires fix's latent upscale). */
  | { kind: 'latents'; clean: Float32Array };

export class Generator {
  constructor(readonly model: StableDiffusionModel) {}

  /** Runs a whole request: batchCount batches of batchSize images (each through both passes with a hires fix). */
  async generate(req: GenerationRequest | ResolvedRequest, hooks: GenerationHooks = {}): Promise<GeneratedImage[]> {
    const r = 'loraTags' in req ? req : resolveRequest(req);
    const { model } = this;
    // The adapters stay set for both passes of a hires fix, as A1111 keeps its networks active.
    await model.setAdapters(r.adapters.map((a) => ({ adapter: model.loadAdapter(a.path), te: a.te, unet: a.unet })));
    const concept = hooks.guidance?.conceptPrompt !== undefined ? (await model.prompts.encodeSchedule([hooks.guidance.conceptPrompt], r.clipSkip))[0]! : null;
    // A1111 encodes the empty prompt once, at model load, with the networks deactivated:
    // the base text encoder's encoding (at this request's clip skip).
    const padWith = r.padCondUncond ? await model.basePrompts.encode('', r.clipSkip) : null;
    const first = await this.preparePass(r, null, padWith);
    const second = r.hires && r.hiresPrompts ? await this.preparePass(r, { settings: r.hires, prompts: r.hiresPrompts }, padWith) : null;
    const padConds = first.paddedLast || (second?.paddedLast ?? false);
    let initLatentsMean: Float32Array | null = null;
    let initLatentsLogvar: Float32Array | null = null;
    if (r.strength !== undefined) {
      [initLatentsMean, initLatentsLogvar] = await this.encodeInit(r);
    }
    const images: GeneratedImage[] = [];
    for (let b = 0; b < r.batchCount; b++) {
      throwIfAborted(hooks.signal);
      const seeds = Array.from({ length: r.batchSize }, (_, i) => r.seed + b * r.batchSize + i);
      const start: PassStart = initLatentsMean && initLatentsLogvar
        ? { kind: 'posterior', mean: initLatentsMean, logvar: initLatentsLogvar, perImage: false }
        : { kind: 'noise' };
      let latents = await this.sample(r, first, b, seeds, concept, start, hooks);
      let { width, height } = first;
      if (second?.hires) {
        throwIfAborted(hooks.signal);
        latents = await this.sample(r, second, b, seeds, concept, await this.hiresStart(r, second.hires, latents, seeds.length), hooks);
        ({ width, height } = second);
      }
      const decoded = await this.decode(latents, height, width);
      const plane = 4 * (height / 8) * (width / 8);
      seeds.forEach((seed, i) => {
        const unit = vaeOutputToUnit(decoded, i, height, width);
        images.push({
          image: unitToRgb(unit, height, width),
          unit,
          latents: latents.slice(i * plane, (i + 1) * plane),
          seed,
          index: b * r.batchSize + i,
          padConds,
        });
      });
    }
    return images;
  }

  /**
   * A pass's size, sampler and per-step conditionings: the hires pass runs its own sampler
   * and prompts when the request names them (A1111's hr_sampler_name, hr_prompt,
   * hr_negative_prompt), its prompts scheduled on A1111's hires timeline.
   */
  private async preparePass(
    r: ResolvedRequest,
    /** The hires fix's settings and prompts for its second pass; null for the first pass. */
    second: { settings: ResolvedHires; prompts: { prompt: string; negativePrompt: string } } | null,
    padWith: EncodedPrompt | null,
  ): Promise<Pass> {
    const hr = second?.settings ?? null;
    const samplerName = hr?.sampler ?? r.sampler;
    const prompts = second?.prompts ?? { prompt: r.prompt, negativePrompt: r.negativePrompt };
    const newSampler = (): Sampler => createSampler(samplerName, {
      steps: hr ? hr.scheduleSteps : r.steps,
      ...(hr ? { strength: hiresStrength(hr) } : r.strength !== undefined ? { strength: r.strength } : {}),
      ...(samplerName === 'DDIM' ? { eta: r.eta } : {}),
    });
    const conditioning = await encodePromptConditioning(this.model.prompts, prompts.prompt, prompts.negativePrompt, hr ? hr.steps : r.steps, r.clipSkip, hr ? r.steps : undefined);
    // Every batch runs the same denoiser calls; A1111 counts them from 0 in each pass.
    const perStep = stepConditionings(conditioning, newSampler().timesteps.length, this.model.prompts.width, padWith);
    return {
      kind: hr ? 'hires' : 'first', hires: hr, width: hr ? hr.width : r.width, height: hr ? hr.height : r.height, newSampler, perStep,
      paddedLast: perStep[perStep.length - 1]?.padded ?? false,
    };
  }

  /** The second pass's clean latents: the first pass's upscaled in latent space, or decoded, resized and encoded again. */
  private async hiresStart(r: ResolvedRequest, hr: ResolvedHires, latents: Float32Array, batch: number): Promise<PassStart> {
    const firstSize = { width: r.width, height: r.height };
    if (hr.kind === 'latent') return { kind: 'latents', clean: upscaleLatents(latents, batch, firstSize, hr) };
    const decoded = await this.decode(latents, r.height, r.width);
    const encoder = await this.model.vaeEncoder();
    const crop = (t: Tensor) => cropLatents(t.toFloat32(), 1, 4, hr.upscaleHeight / 8, hr.upscaleWidth / 8, hr.truncateY, hr.truncateX);
    const plane = 4 * (hr.height / 8) * (hr.width / 8);
    const mean = new Float32Array(batch * plane);
    const logvar = new Float32Array(batch * plane);
    for (let i = 0; i < batch; i++) {
      const image = await upscaleImage(vaeOutputToUnit(decoded, i, r.height, r.width), firstSize, hr);
      const out = await encoder.run({ image: new Tensor('f32', [1, 3, hr.upscaleHeight, hr.upscaleWidth], rgbToVaeInput(image)) }, ['mean', 'logvar']);
      mean.set(crop(out.mean!), i * plane);
      logvar.set(crop(out.logvar!), i * plane);
    }
    return { kind: 'posterior', mean, logvar, perImage: true };
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

  /** The sampler loop of one pass for one batch; returns the final latents [B, 4, h, w]. */
  private async sample(
    r: ResolvedRequest,
    pass: Pass,
    batch: number,
    seeds: number[],
    /** SLD's safety concept, when a guidance hook sets one. */
    concept: EncodedPrompt | null,
    start: PassStart,
    hooks: GenerationHooks,
  ): Promise<Float32Array> {
    const B = seeds.length;
    const h = pass.height / 8;
    const w = pass.width / 8;
    const perImage = 4 * h * w;
    const sampler = pass.newSampler();
    // A fresh generator per image at this pass's shape: A1111 makes a new ImageRNG for the hires pass.
    const rng = new ImageRng({ seeds, shape: [4, h, w], source: r.rng });
    let latents: Float32Array;
    if (start.kind === 'posterior') {
      // diffusers img2img: posterior sample (first draw), then add_noise (second draw)
      const eps = rng.next();
      const clean = new Float32Array(B * perImage);
      const sf = this.model.vaeScalingFactor;
      for (let i = 0; i < B; i++) {
        const from = start.perImage ? i * perImage : 0;
        for (let k = 0; k < perImage; k++) {
          const std = Math.exp(0.5 * start.logvar[from + k]!);
          clean[i * perImage + k] = sf * (start.mean[from + k]! + std * eps[i * perImage + k]!);
        }
      }
      latents = sampler.addNoise(clean, rng.next());
    } else if (start.kind === 'latents') {
      // A1111's latent hires pass: the upscaled latents noised with the new generator's first draw
      latents = sampler.addNoise(start.clean, rng.next());
    } else {
      latents = rng.next();
      const s = sampler.initNoiseSigma;
      if (s !== 1) for (let k = 0; k < latents.length; k++) latents[k] = Math.fround(latents[k]! * s);
    }
    // No classifier-free guidance at CFG <= 1 (diffusers' rule): the negative prompt's pass
    // is skipped, but never under a guidance hook, which works on the uncond prediction.
    const skipUncond = r.cfgScale <= 1 && !hooks.guidance;
    const eps = new Float32Array(B * perImage);
    const steps = sampler.timesteps.length;
    for (let i = 0; i < steps; i++) {
      throwIfAborted(hooks.signal);
      const t = sampler.timesteps[i]!;
      const x = sampler.scaleModelInput(latents, i);
      const s = pass.perStep[i]!;
      if (skipUncond) {
        // A1111's skipped-uncond combination: the first AND part stands in for the uncond at
        // scale 1, so a plain prompt's prediction is used as it is.
        const conds = await this.predict(x, B, h, w, t, s.conds);
        composeGuidance(conds[s.parts[0]!.cond]!, conds, s, 1, eps);
      } else {
        // uncond first, as diffusers batches it: a plain prompt's UNet input, hence its image, is unchanged.
        const preds = await this.predict(x, B, h, w, t, [s.uncond, ...s.conds, ...(concept ? [concept] : [])]);
        const u = preds[0]!;
        const conds = preds.slice(1, 1 + s.conds.length);
        if (hooks.guidance) {
          const k = concept ? preds[1 + s.conds.length]! : null;
          await hooks.guidance.combine({ uncond: u, cond: effectiveCond(u, conds, s), concept: k, cfgScale: r.cfgScale, step: i, pass: pass.kind, out: eps });
        } else {
          composeGuidance(u, conds, s, r.cfgScale, eps);
        }
      }
      sampler.step(eps, i, latents, rng);
      hooks.onStep?.({ batch, pass: pass.kind, width: pass.width, height: pass.height, step: i + 1, steps, predOriginal: sampler.predOriginalSample });
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

  private async decode(latents: Float32Array, height: number, width: number): Promise<Float32Array> {
    const sf = this.model.vaeScalingFactor;
    const z = new Float32Array(latents.length);
    for (let k = 0; k < z.length; k++) z[k] = latents[k]! / sf;
    const n = latents.length / (4 * (height / 8) * (width / 8));
    const out = await this.model.vaeDecoder.run({ latent: new Tensor('f32', [n, 4, height / 8, width / 8], z) }, ['image']);
    return out.image!.toFloat32();
  }
}

