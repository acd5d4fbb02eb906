// Conversions between the VAE's [-1, 1] NCHW float images and 8-bit RGB pixels, matching
// diffusers' VaeImageProcessor (postprocess: x/2 + 0.5, clamp to [0, 1], *255, round).
import sharp, { type Metadata } from 'sharp';
import { RedlineError } from '../errors.ts';

export interface RgbImage {
  width: number;
  height: number;
  /** Interleaved RGB bytes, row-major (HWC). */
  data: Uint8Array;
}

/** [-1, 1] -> [0, 1] float, NCHW for one image of a batch (the golden `image` tensors). */
export function vaeOutputToUnit(decoded: Float32Array, index: number, height: number, width: number): Float32Array {
  const plane = height * width;
  const src = decoded.subarray(index * 3 * plane, (index + 1) * 3 * plane);
  const out = new Float32Array(3 * plane);
  for (let i = 0; i < out.length; i++) out[i] = Math.min(1, Math.max(0, src[i]! / 2 + 0.5));
  return out;
}

/** [0, 1] float NCHW (one image) -> 8-bit RGB, rounded half to even as numpy's round(). */
export function unitToRgb(unit: Float32Array, height: number, width: number): RgbImage {
  const plane = height * width;
  const data = new Uint8Array(plane * 3);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < plane; i++) {
      const v = unit[c * plane + i]! * 255;
      let r = Math.round(v);
      if (r - v === 0.5 && r % 2 === 1) r -= 1; // numpy rounds ties to even
      data[i * 3 + c] = r;
    }
  }
  return { width, height, data };
}

/** 8-bit RGB -> [-1, 1] float NCHW, the VAE encoder's input. */
export function rgbToVaeInput(image: RgbImage): Float32Array {
  const plane = image.width * image.height;
  const out = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) out[c * plane + i] = (image.data[i * 3 + c]! / 255) * 2 - 1;
  }
  return out;
}

/** Limits for decoding user-supplied images (init images, uploads). */
export interface DecodeLimits {
  maxBytes?: number;
  maxPixels?: number;
}

/**
 * Decodes a PNG/JPEG/WebP file into RGB (alpha dropped, composited on black as A1111
 * does for RGBA inputs converted with .convert('RGB')), optionally resized.
 */
export async function decodeImage(input: Buffer | string, opts: DecodeLimits & { width?: number; height?: number } = {}): Promise<RgbImage> {
  const maxBytes = opts.maxBytes ?? 50 * 1024 * 1024;
  const maxPixels = opts.maxPixels ?? 4096 * 4096;
  if (Buffer.isBuffer(input) && input.length > maxBytes) {
    throw new RedlineError('image_too_large', `The image is ${input.length} bytes; the limit is ${maxBytes}.`);
  }
  let meta: Metadata;
  try {
    meta = await sharp(input, { limitInputPixels: maxPixels }).metadata();
  } catch (err) {
    throw new RedlineError('image_invalid', `Cannot read the image${typeof input === 'string' ? ` ${input}` : ''}: ${(err as Error).message}.`,
      'Use a PNG, JPEG or WebP file.');
  }
  if (!meta.format || !['png', 'jpeg', 'webp'].includes(meta.format)) {
    throw new RedlineError('image_type', `Images must be PNG, JPEG or WebP, not ${meta.format ?? 'an unknown format'}.`);
  }
  let pipe = sharp(input, { limitInputPixels: maxPixels }).removeAlpha();
  if (opts.width && opts.height && (opts.width !== meta.width || opts.height !== meta.height)) {
    pipe = pipe.resize(opts.width, opts.height, { fit: 'fill', kernel: 'lanczos3' });
  }
  const { data, info } = await pipe.raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}

export async function encodePng(image: RgbImage): Promise<Buffer> {
  return sharp(Buffer.from(image.data.buffer, image.data.byteOffset, image.data.length), {
    raw: { width: image.width, height: image.height, channels: 3 },
  })
    .png()
    .toBuffer();
}
