import sharp from 'sharp';
import { RedlineError } from '../../errors.ts';

/** A decoded image as the pipeline hands it over: interleaved 8-bit RGB, row-major. */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

export function assertRgbImage(image: RgbImage, what = 'image'): void {
  const { data, width, height } = image;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RedlineError('bad_image', `The ${what} has invalid dimensions ${width}x${height}.`, 'Pass positive integer width and height.');
  }
  if (!(data instanceof Uint8Array) || data.length !== width * height * 3) {
    throw new RedlineError(
      'bad_image',
      `The ${what} buffer holds ${data?.length ?? 0} bytes; ${width}x${height} RGB needs ${width * height * 3}.`,
      'Pass interleaved 8-bit RGB (HxWx3) without alpha.',
    );
  }
}

/** Blur strong enough that no detail survives: sigma is 1/16 of the longer side. */
export function blurSigma(width: number, height: number): number {
  return Math.max(8, Math.round(Math.max(width, height) / 16));
}

export async function blurImage(image: RgbImage): Promise<RgbImage> {
  assertRgbImage(image);
  const { width, height } = image;
  const data = await sharp(image.data, { raw: { width, height, channels: 3 } })
    .blur(blurSigma(width, height))
    .raw()
    .toBuffer();
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width, height };
}

/** Decodes any image file sharp reads (PNG, JPEG, WebP...) to RGB, dropping alpha. */
export async function readImageFile(path: string): Promise<RgbImage> {
  try {
    const { data, info } = await sharp(path).rotate().removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
  } catch (err) {
    throw new RedlineError('bad_image', `Cannot decode image ${path}: ${(err as Error).message}.`, 'Pass a PNG, JPEG or WebP file.');
  }
}
