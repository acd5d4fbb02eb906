// Invisible watermark readable by the `invisible-watermark` Python library's `dwtDct`
// method (the one Stable Diffusion's reference scripts use), and able to read marks that
// library wrote. What that method does, as measured from its source:
//   - BGR -> YUV (OpenCV BT.601 analogue YUV: U = 0.492 (B - Y) + 128); only U is marked
//     (default scales [0, 36, 36], but its channel loop stops before V);
//   - crop to a multiple of 4, one level of Haar DWT on U; only the LL band is used;
//   - the LL band is cut in 4x4 blocks, row-major; block n carries bit n mod L;
//   - in each block, the coefficient of largest magnitude other than [0][0] (first one on
//     ties) is quantised to (floor(|v| / s) + 0.25 + 0.5 bit) * s, keeping its sign
//     (the method's name says DCT, but no transform is applied to the block);
//   - the reader takes the same coefficient, scores 1 when |v| mod s > s/2, averages
//     scores per bit over all blocks and thresholds at 127/255;
//   - payload bytes become bits most significant first (numpy unpackbits);
//   - images under 256x256 pixels are refused.
// What this encoder does differently, none of it visible to that reader (it reads the
// same coefficient, the same way):
//   - it changes U in the pixel domain, keeping Y and V, instead of a full inverse DWT
//     (the reference passes the detail bands back swapped, which transposes every 2x2
//     block of U: a side effect, not part of the mark);
//   - when quantising would let another coefficient of the block become the largest (so
//     the reader would read the wrong one), it moves to the nearest level of the right
//     parity that stays the largest by a margin: smooth images (gradients) then read
//     without block errors;
//   - it moves a 2x2 patch of LL coefficients rather than one, so the mark survives
//     JPEG's 4:2:0 chroma subsampling (measured on sharp q90: single-coefficient marks
//     read ~85% bit errors, the patch 0-2%), at the price of PSNR ~31.5 dB instead of
//     ~37.5 dB on the RGB image (chroma only).
import { RedlineError } from '../../errors.ts';

export interface RgbImage {
  /** Interleaved 8-bit samples, row-major. */
  data: Uint8Array;
  width: number;
  height: number;
  /** 3 (RGB) or 4 (RGBA; alpha is left untouched). */
  channels: number;
}

export interface WatermarkOptions {
  /** Quantisation step for the U channel; the reference's default is 36. */
  scale?: number;
}

export const DEFAULT_WATERMARK_SCALE = 36;
/** The reference refuses to embed in or read from images with fewer pixels than this. */
export const MIN_WATERMARK_PIXELS = 256 * 256;
const BLOCK = 4;
/** How far (in LL units) the marked coefficient is kept above the block's others. */
const ARGMAX_MARGIN = 3;

export function bytesToBits(bytes: Uint8Array): Uint8Array {
  const bits = new Uint8Array(bytes.length * 8);
  for (let i = 0; i < bits.length; i++) bits[i] = (bytes[i >> 3]! >> (7 - (i & 7))) & 1;
  return bits;
}

export function bitsToBytes(bits: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(Math.ceil(bits.length / 8));
  for (let i = 0; i < bits.length; i++) if (bits[i]) bytes[i >> 3]! |= 0x80 >> (i & 7);
  return bytes;
}

function checkImage(img: RgbImage): void {
  if (img.channels !== 3 && img.channels !== 4) {
    throw new RedlineError('watermark_bad_image', `Watermarking needs RGB or RGBA pixels, got ${img.channels} channels.`, 'Convert the image to RGB first.');
  }
  if (img.data.length !== img.width * img.height * img.channels) {
    throw new Error(`pixel buffer holds ${img.data.length} bytes, expected ${img.width}x${img.height}x${img.channels}`);
  }
}

/** U of OpenCV's BGR2YUV, unrounded. */
function chromaU(r: number, g: number, b: number): number {
  const y = 0.299 * r + 0.587 * g + 0.114 * b;
  return 0.492 * (b - y) + 128;
}

/**
 * The Haar LL band of the U channel over the area the reference uses (height and width
 * cropped to multiples of 4). LL[i][j] = (u00 + u01 + u10 + u11) / 2, pywt's orthonormal
 * Haar. `roundU` mirrors OpenCV's 8-bit conversion when reading.
 */
function lowBandOfU(img: RgbImage, roundU: boolean): { ll: Float64Array; llW: number; llH: number } {
  const { data, width, channels } = img;
  const llW = Math.floor(img.width / 4) * 2;
  const llH = Math.floor(img.height / 4) * 2;
  const ll = new Float64Array(llW * llH);
  for (let i = 0; i < llH; i++) {
    for (let j = 0; j < llW; j++) {
      let sum = 0;
      for (let dy = 0; dy < 2; dy++) {
        for (let dx = 0; dx < 2; dx++) {
          const p = ((2 * i + dy) * width + 2 * j + dx) * channels;
          const u = chromaU(data[p]!, data[p + 1]!, data[p + 2]!);
          sum += roundU ? Math.min(255, Math.max(0, Math.round(u))) : u;
        }
      }
      ll[i * llW + j] = sum / 2;
    }
  }
  return { ll, llW, llH };
}

/** Index (0..15, row-major) of the largest |coefficient| in the block, skipping [0][0]. */
function blockArgmax(ll: Float64Array, llW: number, bi: number, bj: number): number {
  let best = 1;
  let bestAbs = -1;
  for (let k = 1; k < BLOCK * BLOCK; k++) {
    const v = Math.abs(ll[(bi * BLOCK + (k >> 2)) * llW + bj * BLOCK + (k & 3)]!);
    if (v > bestAbs) {
      bestAbs = v;
      best = k;
    }
  }
  return best;
}

function blocksOf(llW: number, llH: number): { rows: number; cols: number } {
  return { rows: Math.floor(llH / BLOCK), cols: Math.floor(llW / BLOCK) };
}

/** Returns a marked copy of the pixels. `bits` holds one 0/1 per entry. */
export function embedWatermark(img: RgbImage, bits: Uint8Array, options: WatermarkOptions = {}): Uint8Array {
  checkImage(img);
  const scale = options.scale ?? DEFAULT_WATERMARK_SCALE;
  if (bits.length === 0) throw new RedlineError('watermark_empty_payload', 'The watermark payload is empty.', 'Set a payload of at least one byte.');
  if (img.width * img.height < MIN_WATERMARK_PIXELS) {
    throw new RedlineError(
      'watermark_image_too_small',
      `A dwtDct watermark needs at least 256x256 pixels; this image is ${img.width}x${img.height}.`,
      'Generate at 256x256 or larger, or turn the watermark off for this image.',
    );
  }
  const { ll, llW, llH } = lowBandOfU(img, false);
  const { rows, cols } = blocksOf(llW, llH);
  const out = Uint8Array.from(img.data);
  const { width, channels } = img;
  let n = 0;
  for (let bi = 0; bi < rows; bi++) {
    for (let bj = 0; bj < cols; bj++, n++) {
      const bit = bits[n % bits.length]!;
      const k = blockArgmax(ll, llW, bi, bj);
      const li = bi * BLOCK + (k >> 2);
      const lj = bj * BLOCK + (k & 3);
      const val = ll[li * llW + lj]!;
      let others = 0;
      for (let m = 1; m < BLOCK * BLOCK; m++) {
        if (m !== k) others = Math.max(others, Math.abs(ll[(bi * BLOCK + (m >> 2)) * llW + bj * BLOCK + (m & 3)]!));
      }
      const offset = 0.25 + 0.5 * bit;
      let level = (Math.floor(Math.abs(val) / scale) + offset) * scale;
      while (level < others + ARGMAX_MARGIN) level += scale;
      const target = val >= 0 ? level : -level;
      // The change goes to a 2x2 patch of LL coefficients (4x4 pixels) holding the marked
      // one and reaching into the block: JPEG's 4:2:0 chroma subsampling with triangular
      // upsampling smears an isolated coefficient to ~56% of its change, a 2x2 patch keeps
      // ~77%, which the quarter-step window absorbs. The patch's other coefficients move by
      // the same amount, so they stay at or below the marked one, and any tie reads the same.
      const du = (target - val) / 2;
      // Change U only: Y fixed and R - Y fixed, so R stays and B and G move.
      const db = du / 0.492;
      const dg = (-0.114 * db) / 0.587;
      const y0 = 2 * ((k >> 2) === BLOCK - 1 ? li - 1 : li);
      const x0 = 2 * ((k & 3) === BLOCK - 1 ? lj - 1 : lj);
      for (let dy = 0; dy < 4; dy++) {
        for (let dx = 0; dx < 4; dx++) {
          const p = ((y0 + dy) * width + x0 + dx) * channels;
          out[p + 1] = Math.min(255, Math.max(0, Math.round(img.data[p + 1]! + dg)));
          out[p + 2] = Math.min(255, Math.max(0, Math.round(img.data[p + 2]! + db)));
        }
      }
    }
  }
  return out;
}

export interface WatermarkReading {
  bits: Uint8Array;
  /** Per bit: the fraction of blocks that read 1. */
  scores: Float64Array;
  /** Mean over bits of |2 score - 1|: 1 when every block agrees, ~0 for noise. */
  agreement: number;
  /**
   * The same agreement measured with the wrong period (L + 1). A real mark agrees at its
   * period only; flat or periodic content agrees at any period, so a reading counts as a
   * mark only when the two differ widely.
   */
  offPeriodAgreement: number;
  present: boolean;
  /** Number of blocks read (each bit is voted on by about blocks / L of them). */
  blocks: number;
}

function agreementOf(blockScores: Uint8Array, period: number): { scores: Float64Array; agreement: number } {
  const ones = new Float64Array(period);
  const counts = new Float64Array(period);
  for (let n = 0; n < blockScores.length; n++) {
    ones[n % period]! += blockScores[n]!;
    counts[n % period]! += 1;
  }
  const scores = ones.map((o, i) => o / counts[i]!);
  let agreement = 0;
  for (const s of scores) agreement += Math.abs(2 * s - 1);
  return { scores, agreement: agreement / period };
}

/** Minimum agreement at the payload's period, and minimum lead over the wrong period, for `present`. */
export const PRESENCE_AGREEMENT = 0.5;
export const PRESENCE_LEAD = 0.3;

/** Reads `bitLength` bits the way the reference's dwtDct decoder does. */
export function decodeWatermark(img: RgbImage, bitLength: number, options: WatermarkOptions = {}): WatermarkReading {
  checkImage(img);
  const scale = options.scale ?? DEFAULT_WATERMARK_SCALE;
  if (!Number.isInteger(bitLength) || bitLength < 1) throw new Error(`bitLength must be a positive integer, got ${bitLength}`);
  if (img.width * img.height < MIN_WATERMARK_PIXELS) {
    throw new RedlineError('watermark_image_too_small', `A dwtDct watermark cannot be read from ${img.width}x${img.height} pixels (needs 256x256 or more).`);
  }
  const { ll, llW, llH } = lowBandOfU(img, true);
  const { rows, cols } = blocksOf(llW, llH);
  const blockScores = new Uint8Array(rows * cols);
  let n = 0;
  for (let bi = 0; bi < rows; bi++) {
    for (let bj = 0; bj < cols; bj++, n++) {
      const k = blockArgmax(ll, llW, bi, bj);
      const v = Math.abs(ll[(bi * BLOCK + (k >> 2)) * llW + bj * BLOCK + (k & 3)]!);
      blockScores[n] = v % scale > 0.5 * scale ? 1 : 0;
    }
  }
  const main = agreementOf(blockScores, bitLength);
  const off = agreementOf(blockScores, bitLength + 1);
  const bits = Uint8Array.from(main.scores, (s) => (s * 255 > 127 ? 1 : 0));
  return {
    bits,
    scores: main.scores,
    agreement: main.agreement,
    offPeriodAgreement: off.agreement,
    present: main.agreement >= PRESENCE_AGREEMENT && main.agreement - off.agreement >= PRESENCE_LEAD,
    blocks: blockScores.length,
  };
}
