// Provenance marks on every image Redline writes, in the order that keeps each one valid:
// the invisible watermark goes into the pixels first, then the A1111 `parameters` text and
// the XMP packet (IPTC digitalSourceType), and last the C2PA manifest, whose hash binding
// covers all of the above.
import { readFileSync } from 'node:fs';
import sharp, { type Metadata } from 'sharp';
import type { X509Certificate } from '@peculiar/x509';
import { RedlineError } from '../../errors.ts';
import { checkC2pa, signPng, type C2paReport, type GenerationRecord } from './c2pa.ts';
import type { SigningIdentity } from './identity.ts';
import { insertChunksBeforeImageData, isPng, itxtChunk, readChunks, readTextChunks, textChunk } from './png.ts';
import { bitsToBytes, bytesToBits, decodeWatermark, DEFAULT_WATERMARK_SCALE, embedWatermark, MIN_WATERMARK_PIXELS, type RgbImage } from './watermark.ts';
import { buildXmpPacket, readDigitalSourceType, TRAINED_ALGORITHMIC_MEDIA, XMP_KEYWORD } from './xmp.ts';

export { loadSigningIdentity, defaultDataDir, type SigningIdentity } from './identity.ts';
export { TRAINED_ALGORITHMIC_MEDIA } from './xmp.ts';

/** The watermark length a checker reads when the file's manifest does not say (SDXL's is 48 bits too). */
export const DEFAULT_WATERMARK_BITS = 48;
export const PARAMETERS_KEYWORD = 'parameters';

const VERSION = (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;

export interface ProvenanceInput {
  /** A1111 infotext (from src/pipeline/infotext.ts), written as the `parameters` chunk. */
  infotext: string;
  /** Base model hash, e.g. 'sha256:<hex>'. */
  modelHash: string;
  /** Adapter name -> hash. */
  adapterHashes: Record<string, string>;
  /**
   * Operator's watermark payload (bytes, e.g. 4 or 6). `null` writes no watermark: only
   * for images under 256x256 pixels, which the dwtDct method cannot carry.
   */
  payload: Uint8Array | null;
  identity: SigningIdentity;
}

async function decodePixels(image: Uint8Array): Promise<RgbImage> {
  const { data, info } = await sharp(image).toColourspace('srgb').raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels: info.channels };
}

/** Marks a PNG Redline produced. Returns the new file; the input is not modified. */
export async function applyProvenance(png: Uint8Array, input: ProvenanceInput): Promise<Buffer> {
  if (!isPng(png)) throw new RedlineError('not_png', 'Provenance marks are written into PNG files only.', 'Encode the image as PNG first.');
  if (readChunks(png).some((c) => c.type === 'caBX')) {
    // Re-marking would stack a second watermark on the first and drop the first manifest.
    throw new RedlineError('c2pa_already_signed', 'The PNG already carries a C2PA manifest.', 'Mark an image once, when Redline writes it.');
  }
  let base: Uint8Array = png;
  let watermark: GenerationRecord['watermark'];
  if (input.payload !== null) {
    if (input.payload.length === 0) throw new RedlineError('watermark_empty_payload', 'The watermark payload is empty.', 'Configure a payload of at least one byte, e.g. 6 bytes (48 bits).');
    const pixels = await decodePixels(png);
    const marked = embedWatermark(pixels, bytesToBits(input.payload));
    base = await sharp(marked, { raw: { width: pixels.width, height: pixels.height, channels: pixels.channels as 3 | 4 } })
      .png({ compressionLevel: 6 })
      .toBuffer();
    watermark = { method: 'dwtDct', bits: input.payload.length * 8, scale: DEFAULT_WATERMARK_SCALE };
  }
  const withText = insertChunksBeforeImageData(base, [
    textChunk(PARAMETERS_KEYWORD, input.infotext),
    itxtChunk(XMP_KEYWORD, buildXmpPacket({ digitalSourceType: TRAINED_ALGORITHMIC_MEDIA, creatorTool: `Redline ${VERSION}` })),
  ]);
  const record: GenerationRecord = { modelHash: input.modelHash, adapterHashes: input.adapterHashes, ...(watermark ? { watermark } : {}) };
  return signPng(new Uint8Array(withText), record, input.identity, VERSION);
}

export interface WatermarkReport {
  /** False when the image is too small to read (see `reason`). */
  checked: boolean;
  present: boolean;
  bits: number;
  /** The payload read, hex; meaningful when `present`. */
  payloadHex?: string;
  agreement?: number;
  offPeriodAgreement?: number;
  /** Set when `expectedPayload` was given: bit errors against it. */
  bitErrors?: number;
  reason?: string;
}

export interface ProvenanceReport {
  format: string;
  width: number;
  height: number;
  parameters: { present: boolean; text?: string };
  xmp: { present: boolean; digitalSourceType?: string; trainedAlgorithmicMedia: boolean };
  c2pa: C2paReport;
  watermark: WatermarkReport;
}

export interface CheckOptions {
  /** Roots to trust for the signer (e.g. the local identity's CA). */
  trustAnchors?: X509Certificate[];
  /** Watermark length when the manifest does not give it. */
  watermarkBits?: number;
  /** The operator's payload, to count bit errors against. */
  expectedPayload?: Uint8Array;
}

function readWatermark(pixels: RgbImage, bits: number, scale: number | undefined, expectedPayload: Uint8Array | undefined): WatermarkReport {
  const reading = decodeWatermark(pixels, bits, { scale: scale ?? DEFAULT_WATERMARK_SCALE });
  const report: WatermarkReport = {
    checked: true,
    present: reading.present,
    bits,
    payloadHex: Buffer.from(bitsToBytes(reading.bits)).toString('hex'),
    agreement: Number(reading.agreement.toFixed(3)),
    offPeriodAgreement: Number(reading.offPeriodAgreement.toFixed(3)),
  };
  if (expectedPayload) {
    const expected = bytesToBits(expectedPayload);
    report.bitErrors = expected.reduce((n, b, i) => n + (b !== reading.bits[i] ? 1 : 0), 0) + Math.abs(expected.length - bits);
  }
  return report;
}

async function watermarkOf(file: Uint8Array, width: number, height: number, bits: number, scale: number | undefined, expectedPayload: Uint8Array | undefined): Promise<WatermarkReport> {
  if (width * height < MIN_WATERMARK_PIXELS) {
    return { checked: false, present: false, bits, reason: `image is ${width}x${height}; the dwtDct watermark needs 256x256 or more` };
  }
  let pixels: RgbImage;
  try {
    pixels = await decodePixels(file);
  } catch (e) {
    return { checked: false, present: false, bits, reason: `pixels cannot be decoded: ${(e as Error).message}` };
  }
  return readWatermark(pixels, bits, scale, expectedPayload);
}

/** Reports every mark found in an image file (PNG, or any format sharp reads for the watermark). */
export async function checkProvenance(file: Uint8Array, options: CheckOptions = {}): Promise<ProvenanceReport> {
  let meta: Metadata;
  try {
    meta = await sharp(file).metadata();
  } catch (e) {
    throw new RedlineError('image_unreadable', `Cannot read the image: ${(e as Error).message}`, 'Pass a PNG, JPEG or WebP file.');
  }
  const png = isPng(file);
  const texts = png ? readTextChunks(file) : [];
  const parameters = texts.find((t) => t.keyword === PARAMETERS_KEYWORD)?.text;
  const xmpText = texts.find((t) => t.keyword === XMP_KEYWORD)?.text ?? (meta.xmp ? meta.xmp.toString('utf8') : undefined);
  const digitalSourceType = xmpText ? readDigitalSourceType(xmpText) : undefined;
  const c2pa = png ? await checkC2pa(new Uint8Array(file), options.trustAnchors ?? []) : { present: false, signatureValid: false, hashBindingValid: false, valid: false, trusted: false, failures: [] };

  const bits = c2pa.generation?.watermark?.bits ?? options.watermarkBits ?? (options.expectedPayload ? options.expectedPayload.length * 8 : undefined) ?? DEFAULT_WATERMARK_BITS;
  const width = meta.width ?? 0;
  const height = meta.height ?? 0;
  const scale = c2pa.generation?.watermark?.scale;
  const watermark = await watermarkOf(file, width, height, bits, scale, options.expectedPayload);
  return {
    format: meta.format ?? 'unknown',
    width,
    height,
    parameters: { present: parameters !== undefined, ...(parameters !== undefined ? { text: parameters } : {}) },
    xmp: { present: xmpText !== undefined, ...(digitalSourceType ? { digitalSourceType } : {}), trainedAlgorithmicMedia: digitalSourceType === TRAINED_ALGORITHMIC_MEDIA },
    c2pa,
    watermark,
  };
}
