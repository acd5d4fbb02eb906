import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { bitsToBytes, bytesToBits, decodeWatermark, embedWatermark } from '../../../src/safety/provenance/watermark.ts';
import { RedlineError } from '../../../src/errors.ts';
import { gradientPng, rgbPixels, shapesPng } from './images.ts';

type Pixels = Awaited<ReturnType<typeof rgbPixels>>;

/**
 * The reader of invisible-watermark's dwtDct method, transcribed step by step from its
 * Python (imwatermark/maxDct.py, decode path) independently of Redline's decoder:
 * 8-bit YUV as OpenCV computes it, pywt's haar dwt2 approximation band of U over the
 * image cropped to multiples of 4, then per 4x4 block np.argmax of |block.flatten()[1:]| + 1,
 * score (|v| % scale) > 0.5 * scale, mean per bit, bit = mean * 255 > 127.
 */
function referenceDecode(img: Pixels, bitLength: number, scale = 36): Uint8Array {
  const rows = Math.floor(img.height / 4) * 4;
  const cols = Math.floor(img.width / 4) * 4;
  const u: number[][] = [];
  for (let y = 0; y < rows; y++) {
    const row: number[] = [];
    for (let x = 0; x < cols; x++) {
      const p = (y * img.width + x) * img.channels;
      const [r, g, b] = [img.data[p]!, img.data[p + 1]!, img.data[p + 2]!];
      const luma = 0.299 * r + 0.587 * g + 0.114 * b;
      row.push(Math.min(255, Math.max(0, Math.round((b - luma) * 0.492 + 128))));
    }
    u.push(row);
  }
  const ca: number[][] = [];
  for (let i = 0; i < rows / 2; i++) {
    ca.push([]);
    for (let j = 0; j < cols / 2; j++) {
      // haar analysis low-pass [1/sqrt2, 1/sqrt2] along both axes
      ca[i]!.push((u[2 * i]![2 * j]! + u[2 * i]![2 * j + 1]! + u[2 * i + 1]![2 * j]! + u[2 * i + 1]![2 * j + 1]!) / 2);
    }
  }
  const scores: number[][] = Array.from({ length: bitLength }, () => []);
  let num = 0;
  for (let i = 0; i < Math.floor(ca.length / 4); i++) {
    for (let j = 0; j < Math.floor(ca[0]!.length / 4); j++) {
      const flat: number[] = [];
      for (let a = 0; a < 4; a++) for (let b = 0; b < 4; b++) flat.push(ca[i * 4 + a]![j * 4 + b]!);
      const rest = flat.slice(1).map(Math.abs);
      const pos = rest.indexOf(Math.max(...rest)) + 1;
      const val = Math.abs(flat[pos]!);
      scores[num % bitLength]!.push(val % scale > 0.5 * scale ? 1 : 0);
      num++;
    }
  }
  return Uint8Array.from(scores, (s) => ((s.reduce((x, y) => x + y, 0) / s.length) * 255 > 127 ? 1 : 0));
}

function bitErrors(a: Uint8Array, b: Uint8Array): number {
  return a.reduce((n, bit, i) => n + (bit !== b[i] ? 1 : 0), 0);
}

async function marked(source: Buffer, payload: Uint8Array): Promise<{ original: Pixels; png: Buffer }> {
  const original = await rgbPixels(source);
  const data = embedWatermark(original, bytesToBits(payload));
  return { original, png: await sharp(data, { raw: { width: original.width, height: original.height, channels: 3 } }).png().toBuffer() };
}

const PAYLOAD = new Uint8Array([0x52, 0x65, 0x64, 0x6c, 0x69, 0x6e]); // 48 bits, "Redlin"
const BITS = bytesToBits(PAYLOAD);

describe('dwtDct watermark', () => {
  it('packs payload bytes most significant bit first, as numpy.unpackbits does', () => {
    expect(Array.from(bytesToBits(new Uint8Array([0xa1])))).toEqual([1, 0, 1, 0, 0, 0, 0, 1]);
    expect(bitsToBytes(bytesToBits(PAYLOAD))).toEqual(PAYLOAD);
  });

  for (const [name, render] of [['gradient', gradientPng], ['shapes', shapesPng]] as const) {
    describe(`on a ${name} image`, () => {
      it('reads back after PNG re-encode with 0 bit errors, by Redline and by the reference reader', async () => {
        const { png } = await marked(await render(), PAYLOAD);
        const reencoded = await sharp(png).png({ compressionLevel: 9 }).toBuffer();
        const pixels = await rgbPixels(reencoded);
        const reading = decodeWatermark(pixels, BITS.length);
        const ber = bitErrors(reading.bits, BITS) / BITS.length;
        console.log(`${name}: PNG re-encode bit error rate ${ber} (Redline), ${bitErrors(referenceDecode(pixels, BITS.length), BITS) / BITS.length} (reference reader)`);
        expect(ber).toBe(0);
        expect(reading.present).toBe(true);
        expect(bitErrors(referenceDecode(pixels, BITS.length), BITS)).toBe(0);
      });

      it('reads back after JPEG quality 90 (sharp defaults, 4:2:0 chroma) with at most 5% bit errors', async () => {
        const { png } = await marked(await render(), PAYLOAD);
        const jpeg = await sharp(png).jpeg({ quality: 90 }).toBuffer();
        const pixels = await rgbPixels(jpeg);
        const reading = decodeWatermark(pixels, BITS.length);
        const ber = bitErrors(reading.bits, BITS) / BITS.length;
        const refBer = bitErrors(referenceDecode(pixels, BITS.length), BITS) / BITS.length;
        console.log(`${name}: JPEG q90 bit error rate ${ber} (Redline), ${refBer} (reference reader)`);
        expect(ber).toBeLessThanOrEqual(0.05);
        expect(refBer).toBeLessThanOrEqual(0.05);
        expect(reading.present).toBe(true);
      });

      it('leaves luma alone and changes chroma by little (PSNR over RGB above 30 dB)', async () => {
        const { original, png } = await marked(await render(), PAYLOAD);
        const after = await rgbPixels(png);
        let sq = 0;
        let lumaShift = 0;
        for (let p = 0; p < after.data.length; p += 3) {
          for (let c = 0; c < 3; c++) sq += (after.data[p + c]! - original.data[p + c]!) ** 2;
          const luma = (d: Uint8Array) => 0.299 * d[p]! + 0.587 * d[p + 1]! + 0.114 * d[p + 2]!;
          lumaShift += Math.abs(luma(after.data) - luma(original.data));
        }
        const psnr = 10 * Math.log10((255 * 255) / (sq / after.data.length));
        // Luma moves only by rounding, and where G or B hits 0 or 255.
        const meanLumaShift = lumaShift / (after.data.length / 3);
        console.log(`${name}: PSNR ${psnr.toFixed(1)} dB, mean luma change ${meanLumaShift.toFixed(3)}`);
        expect(psnr).toBeGreaterThan(30);
        expect(meanLumaShift).toBeLessThan(0.1);
      });
    });
  }

  it('reads a mark written the reference way (one coefficient quantised per block) with 0 bit errors', async () => {
    // Mark written by a transcription of the reference encoder (pywt haar, argmax, quantise,
    // inverse haar with untouched details), to show Redline reads marks other tools wrote.
    const img = await rgbPixels(await shapesPng());
    const out = Uint8Array.from(img.data);
    const { width } = img;
    for (let bi = 0; bi < img.height / 8; bi++) {
      for (let bj = 0; bj < width / 8; bj++) {
        const bit = BITS[(bi * (width / 8) + bj) % BITS.length]!;
        const ll: number[] = [];
        const uAt = (y: number, x: number) => {
          const p = (y * width + x) * 3;
          return 0.492 * (img.data[p + 2]! - (0.299 * img.data[p]! + 0.587 * img.data[p + 1]! + 0.114 * img.data[p + 2]!)) + 128;
        };
        for (let a = 0; a < 4; a++) for (let b = 0; b < 4; b++) {
          const y = bi * 8 + 2 * a, x = bj * 8 + 2 * b;
          ll.push((uAt(y, x) + uAt(y, x + 1) + uAt(y + 1, x) + uAt(y + 1, x + 1)) / 2);
        }
        const rest = ll.slice(1).map(Math.abs);
        const pos = rest.indexOf(Math.max(...rest)) + 1;
        const v = ll[pos]!;
        const target = (Math.floor(v / 36) + 0.25 + 0.5 * bit) * 36;
        const db = (target - v) / 2 / 0.492;
        for (let dy = 0; dy < 2; dy++) for (let dx = 0; dx < 2; dx++) {
          const p = ((bi * 8 + 2 * (pos >> 2) + dy) * width + bj * 8 + 2 * (pos & 3) + dx) * 3;
          out[p + 1] = Math.min(255, Math.max(0, Math.round(img.data[p + 1]! - (0.114 * db) / 0.587)));
          out[p + 2] = Math.min(255, Math.max(0, Math.round(img.data[p + 2]! + db)));
        }
      }
    }
    const reading = decodeWatermark({ ...img, data: out }, BITS.length);
    expect(bitErrors(reading.bits, BITS)).toBe(0);
  });

  it('does not report a mark in unmarked images, flat ones included', async () => {
    for (const png of [await gradientPng(), await shapesPng(), await sharp({ create: { width: 512, height: 512, channels: 3, background: '#808080' } }).png().toBuffer()]) {
      expect(decodeWatermark(await rgbPixels(png), BITS.length).present).toBe(false);
    }
  });

  it('refuses images smaller than the reference accepts', async () => {
    const small = await rgbPixels(await gradientPng(128, 128));
    expect(() => embedWatermark(small, BITS)).toThrowError(RedlineError);
    expect(() => embedWatermark(small, BITS)).toThrow(/256x256/);
  });
});
