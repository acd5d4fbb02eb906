// A1111's txt2img "Hires. fix" (modules/processing.py StableDiffusionProcessingTxt2Img):
// a first pass at width x height, an upscale, then an img2img pass at the target size.
//
// - Target size (calculate_target_resolution): hr_resize_x/y both 0 -> int(side * hr_scale);
//   one of them 0 -> the other side follows the first pass's aspect ratio (integer division);
//   both given -> upscale to cover the box keeping the aspect ratio, then crop the latents
//   centred (truncate = (upscaled - target) // 8, top/left loses truncate // 2).
// - Upscalers: the latent modes interpolate the first pass's latents
//   (shared.latent_upscale_modes); the image modes decode, resize the 8-bit image and
//   VAE-encode it again ("None" and "Lanczos" resize with Lanczos, "Nearest" with nearest).
// - Steps (sd_samplers_common.setup_img2img_steps with explicit steps): the second pass runs
//   exactly hr_second_pass_steps (or steps) steps, the last ones of a schedule of
//   int(steps / min(denoise, 0.999)) steps.
// - Noise: a fresh per-image generator for the same seeds at the target latent shape
//   (A1111 makes a new ImageRNG for the second pass); the latent modes noise the upscaled
//   latents with its first draw, the image modes encode as img2img does (posterior sample
//   from the first draw, add_noise from the second).
// - Prompt editing in the second pass follows A1111's hires timeline: [a:b:N] with N an
//   integer counts on from the first pass's steps, N with a '.' is 1 + fraction of the
//   second pass (text/prompt-schedule.ts).
import sharp from 'sharp';
import { RedlineError } from '../errors.ts';
import { resolveSamplerName, type SamplerName } from '../sampling/index.ts';
import type { RgbImage } from './image.ts';
import { a1111Sampler, type HiresInfo } from './infotext.ts';
import { type InterpolationMode, interpolate } from './interpolate.ts';

/** A1111's latent upscale modes: the name shown in the UI and its interpolate() call. */
export const LATENT_UPSCALERS: Readonly<Record<string, { mode: InterpolationMode; antialias: boolean }>> = {
  'Latent': { mode: 'bilinear', antialias: false },
  'Latent (antialiased)': { mode: 'bilinear', antialias: true },
  'Latent (bicubic)': { mode: 'bicubic', antialias: false },
  'Latent (bicubic antialiased)': { mode: 'bicubic', antialias: true },
  'Latent (nearest)': { mode: 'nearest', antialias: false },
  'Latent (nearest-exact)': { mode: 'nearest-exact', antialias: false },
};

/** A1111's pixel upscalers Redline has (A1111's "None" resizes with Lanczos). */
export const IMAGE_UPSCALERS: Readonly<Record<string, 'lanczos3' | 'nearest'>> = {
  'None': 'lanczos3',
  'Lanczos': 'lanczos3',
  'Nearest': 'nearest',
};

export const HIRES_UPSCALERS: readonly string[] = [...Object.keys(LATENT_UPSCALERS), ...Object.keys(IMAGE_UPSCALERS)];

/** A1111's latent_upscale_default_mode, used when a request names no upscaler. */
export const DEFAULT_HIRES_UPSCALER = 'Latent';
/** A1111's web UI default for the hires pass's denoising strength. */
export const DEFAULT_HIRES_DENOISE = 0.7;

/** What a request asks of the hires pass; field names follow A1111's hr_* fields. */
export interface HiresRequest {
  /** hr_scale: used when resizeX and resizeY are both 0 (default 2). */
  scale?: number;
  /** hr_resize_x / hr_resize_y: a target size; 0 = follow the other side (default 0). */
  resizeX?: number;
  resizeY?: number;
  /** hr_upscaler: one of HIRES_UPSCALERS; left out or null = "Latent" (and no "Hires upscaler" in the infotext, as A1111). */
  upscaler?: string | null;
  /** hr_second_pass_steps: 0 or left out = the first pass's steps. */
  steps?: number;
  /** denoising_strength of the second pass, in (0, 1] (default 0.7). */
  denoise?: number;
  /** hr_prompt: the second pass's prompt (A1111 syntax, <lora:> tags included); '' or null = the first pass's prompt, as A1111. */
  prompt?: string | null;
  /** hr_negative_prompt; '' or null = the first pass's negative prompt. */
  negativePrompt?: string | null;
  /** hr_sampler_name (a Redline sampler name, e.g. "DPM++ 2M Karras"); '', null or "Use same sampler" = the first pass's. */
  sampler?: string | null;
}

/** The value A1111's UI sends for hr_sampler_name when the second pass keeps the first pass's sampler. */
export const SAME_SAMPLER = 'Use same sampler';

export interface ResolvedHires {
  upscaler: string;
  /** Whether the request named the upscaler (A1111 writes "Hires upscaler" only then). */
  upscalerGiven: boolean;
  kind: 'latent' | 'image';
  scale: number;
  resizeX: number;
  resizeY: number;
  /** Size the first pass is upscaled to, before the centred crop. */
  upscaleWidth: number;
  upscaleHeight: number;
  /** Latent rows/columns cropped (A1111's truncate_x/y): left/top lose half, rounded down. */
  truncateX: number;
  truncateY: number;
  /** Final image size. */
  width: number;
  height: number;
  /** hr_second_pass_steps as given (0 = same as the first pass). */
  requestedSteps: number;
  /** Steps the second pass runs. */
  steps: number;
  /** Length of the schedule those steps are the end of: int(steps / min(denoise, 0.999)). */
  scheduleSteps: number;
  denoise: number;
  /** The second pass's prompts as written; null = the first pass's (hr_prompt left empty). */
  prompt: string | null;
  negativePrompt: string | null;
  /** The second pass's sampler; null = the first pass's. */
  sampler: SamplerName | null;
}

function wholeNumber(v: number, name: string, min: number, max: number): number {
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new RedlineError('bad_hires', `Hires fix: ${name} must be a whole number from ${min} to ${max}, got ${String(v)}.`);
  }
  return v;
}

/** The canonical spelling of an upscaler name (case-insensitive); a RedlineError listing the valid ones otherwise. */
export function resolveHiresUpscaler(name: string): string {
  const found = HIRES_UPSCALERS.find((u) => u.toLowerCase() === name.trim().toLowerCase());
  if (!found) {
    throw new RedlineError('unknown_upscaler', `Unknown hires upscaler "${name}".`,
      `Valid upscalers: ${HIRES_UPSCALERS.join(', ')}. Model upscalers (ESRGAN, SwinIR, ...) are not available in Redline.`);
  }
  return found;
}

/**
 * A1111's hires target for a first pass of width x height, checked: the upscaled and final
 * sizes must be multiples of 8 (the VAE's factor) from 64 to maxSide.
 */
export function resolveHires(h: HiresRequest, first: { width: number; height: number; steps: number }, maxSide: number): ResolvedHires {
  const scale = h.scale ?? 2;
  if (!Number.isFinite(scale) || scale < 1 || scale > 4) {
    throw new RedlineError('bad_hires', `Hires fix: the upscale factor must be from 1 to 4, got ${String(h.scale)}.`);
  }
  const resizeX = wholeNumber(h.resizeX ?? 0, 'resize width', 0, maxSide);
  const resizeY = wholeNumber(h.resizeY ?? 0, 'resize height', 0, maxSide);
  const requestedSteps = wholeNumber(h.steps ?? 0, 'steps', 0, 150);
  const denoise = h.denoise ?? DEFAULT_HIRES_DENOISE;
  if (!(Number.isFinite(denoise) && denoise > 0 && denoise <= 1)) {
    throw new RedlineError('bad_hires', `Hires fix: the denoising strength must be in (0, 1], got ${String(h.denoise)}.`,
      'A1111 uses 0.7 by default; lower keeps more of the first pass.');
  }
  const upscalerGiven = h.upscaler !== undefined && h.upscaler !== null;
  const upscaler = upscalerGiven ? resolveHiresUpscaler(h.upscaler!) : DEFAULT_HIRES_UPSCALER;
  const { width: w, height: hgt } = first;
  let upscaleWidth: number;
  let upscaleHeight: number;
  if (resizeX === 0 && resizeY === 0) {
    upscaleWidth = Math.trunc(w * scale);
    upscaleHeight = Math.trunc(hgt * scale);
  } else if (resizeY === 0 || (resizeX !== 0 && w / hgt < resizeX / resizeY)) {
    upscaleWidth = resizeX;
    upscaleHeight = Math.floor((resizeX * hgt) / w);
  } else {
    upscaleWidth = Math.floor((resizeY * w) / hgt);
    upscaleHeight = resizeY;
  }
  // Only a box (both sides given) is cropped to; otherwise the upscale is the final size.
  const box = resizeX !== 0 && resizeY !== 0;
  const width = box ? resizeX : upscaleWidth;
  const height = box ? resizeY : upscaleHeight;
  const asked = resizeX === 0 && resizeY === 0 ? `Hires upscale ${scale} of ${w}x${hgt}` : `Hires resize ${resizeX}x${resizeY} of ${w}x${hgt}`;
  for (const [what, sw, sh] of [['upscales to', upscaleWidth, upscaleHeight], ['gives', width, height]] as const) {
    if (sw % 8 !== 0 || sh % 8 !== 0) {
      throw new RedlineError('bad_hires_size', `${asked} ${what} ${sw}x${sh}, which is not a multiple of 8.`,
        'Pick a factor or resize target that gives multiples of 8 (e.g. --hires-resize with multiples of 8 and the first pass\'s aspect ratio).');
    }
    if (Math.min(sw, sh) < 64 || Math.max(sw, sh) > maxSide) {
      throw new RedlineError('bad_hires_size', `${asked} ${what} ${sw}x${sh}; each side must be from 64 to ${maxSide}.`);
    }
  }
  if (width > upscaleWidth || height > upscaleHeight) {
    throw new RedlineError('bad_hires_size', `${asked} cannot cover ${width}x${height}.`);
  }
  const steps = requestedSteps || first.steps;
  const samplerName = h.sampler?.trim() ?? '';
  return {
    upscaler,
    upscalerGiven,
    kind: upscaler in LATENT_UPSCALERS ? 'latent' : 'image',
    scale,
    resizeX,
    resizeY,
    upscaleWidth,
    upscaleHeight,
    truncateX: (upscaleWidth - width) / 8,
    truncateY: (upscaleHeight - height) / 8,
    width,
    height,
    requestedSteps,
    steps,
    scheduleSteps: Math.trunc(steps / Math.min(denoise, 0.999)),
    denoise,
    // A1111's setup_prompts: an empty hr_prompt is the main prompt.
    prompt: h.prompt ? h.prompt : null,
    negativePrompt: h.negativePrompt ? h.negativePrompt : null,
    sampler: samplerName === '' || samplerName === SAME_SAMPLER ? null : hiresSampler(samplerName),
  };
}

function hiresSampler(name: string): SamplerName {
  try {
    return resolveSamplerName(name);
  } catch (err) {
    if (err instanceof RedlineError) throw new RedlineError(err.code, `Hires sampler: ${err.message}`, err.hint);
    throw err;
  }
}

/**
 * The img2img strength that makes Redline's diffusers-style truncation (keep the last
 * int(N * strength) of N steps) keep exactly `steps` of `scheduleSteps`.
 */
export function hiresStrength(hr: ResolvedHires): number {
  return hr.steps >= hr.scheduleSteps ? 1 : (hr.steps + 0.5) / hr.scheduleSteps;
}

/** A1111's centred crop of [B, C, h, w] latents by truncate rows/columns (top/left lose half, rounded down). */
export function cropLatents(x: Float32Array, b: number, c: number, h: number, w: number, truncateY: number, truncateX: number): Float32Array {
  if (truncateX === 0 && truncateY === 0) return x;
  const y0 = Math.floor(truncateY / 2);
  const x0 = Math.floor(truncateX / 2);
  const oh = h - truncateY;
  const ow = w - truncateX;
  const out = new Float32Array(b * c * oh * ow);
  for (let p = 0; p < b * c; p++) {
    for (let y = 0; y < oh; y++) {
      out.set(x.subarray(p * h * w + (y + y0) * w + x0, p * h * w + (y + y0) * w + x0 + ow), p * oh * ow + y * ow);
    }
  }
  return out;
}

/** Latent mode: interpolates the batch's latents [B, 4, h, w] to the upscaled size, then crops. */
export function upscaleLatents(latents: Float32Array, batch: number, first: { width: number; height: number }, hr: ResolvedHires): Float32Array {
  const mode = LATENT_UPSCALERS[hr.upscaler];
  if (!mode) throw new Error(`upscaleLatents: ${hr.upscaler} is not a latent upscaler`);
  const h = hr.upscaleHeight / 8;
  const w = hr.upscaleWidth / 8;
  const up = interpolate(latents, { n: batch, c: 4, h: first.height / 8, w: first.width / 8 }, h, w, mode.mode, mode.antialias);
  return cropLatents(up, batch, 4, h, w, hr.truncateY, hr.truncateX);
}

/**
 * Image mode, one image: the first pass's decoded image in [0, 1] (NCHW) to 8-bit as
 * A1111 converts it for its upscalers (255 * x, truncated), resized to the upscaled size.
 */
export async function upscaleImage(unit: Float32Array, first: { width: number; height: number }, hr: ResolvedHires): Promise<RgbImage> {
  const kernel = IMAGE_UPSCALERS[hr.upscaler];
  if (!kernel) throw new Error(`upscaleImage: ${hr.upscaler} is not an image upscaler`);
  const plane = first.width * first.height;
  const rgb = new Uint8Array(plane * 3);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < plane; i++) rgb[i * 3 + c] = Math.trunc(Math.fround(255 * unit[c * plane + i]!));
  }
  const { data, info } = await sharp(rgb, { raw: { width: first.width, height: first.height, channels: 3 } })
    .resize(hr.upscaleWidth, hr.upscaleHeight, { fit: 'fill', kernel })
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}

/** The first pass as the infotext names it: its prompts as written and its sampler. */
export interface FirstPassText {
  prompt: string;
  negativePrompt: string;
  sampler: string;
}

/**
 * What the infotext records of a hires fix: its hr_* fields and the second pass's strength.
 * As A1111's init() and get_sigmas(): "Hires sampler" when a sampler was named and differs
 * from the first pass's, "Hires prompt" / "Hires negative prompt" when the text differs
 * from the first pass's, "Hires schedule type" when the second pass runs on a schedule
 * (Karras) the first does not.
 */
export function hiresInfotext(hr: ResolvedHires, first: FirstPassText): { hires: HiresInfo; denoisingStrength: number } {
  const resized = hr.resizeX !== 0 || hr.resizeY !== 0;
  const mainSampler = a1111Sampler(first.sampler);
  const hrSampler = hr.sampler === null ? null : a1111Sampler(hr.sampler);
  return {
    hires: {
      ...(hrSampler && hrSampler.sampler !== mainSampler.sampler ? { sampler: hrSampler.sampler } : {}),
      ...(hr.prompt !== null && hr.prompt !== first.prompt ? { prompt: hr.prompt } : {}),
      ...(hr.negativePrompt !== null && hr.negativePrompt !== first.negativePrompt ? { negativePrompt: hr.negativePrompt } : {}),
      ...(hrSampler && hrSampler.scheduleType !== 'Automatic' && hrSampler.scheduleType !== mainSampler.scheduleType ? { scheduleType: hrSampler.scheduleType } : {}),
      ...(resized ? { resize: { x: hr.resizeX, y: hr.resizeY } } : { upscale: hr.scale }),
      ...(hr.requestedSteps ? { steps: hr.requestedSteps } : {}),
      ...(hr.upscalerGiven ? { upscaler: hr.upscaler } : {}),
    },
    denoisingStrength: hr.denoise,
  };
}
