// Provenance marks on the CPU: added latency per 512x512 image for applyProvenance
// (watermark embed + PNG re-encode + parameters/XMP chunks + C2PA sign) and its parts,
// and for checkProvenance (what `redline provenance check` does).
// Target (issue 6): output checks + provenance together under 300 ms per image.
// Run: npx tsx bench/provenance.ts [--iterations N]
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { signPng } from '../src/safety/provenance/c2pa.ts';
import { applyProvenance, checkProvenance, loadSigningIdentity } from '../src/safety/provenance/index.ts';
import { insertChunksBeforeImageData, itxtChunk, textChunk } from '../src/safety/provenance/png.ts';
import { bytesToBits, decodeWatermark, embedWatermark } from '../src/safety/provenance/watermark.ts';
import { buildXmpPacket, TRAINED_ALGORITHMIC_MEDIA, XMP_KEYWORD } from '../src/safety/provenance/xmp.ts';
import { formatTimes, timeRuns } from './_timing.ts';

const { values } = parseArgs({ options: { iterations: { type: 'string', default: '20' } } });
const iterations = Number(values.iterations);
async function time(label: string, fn: () => Promise<unknown> | unknown): Promise<void> {
  console.log(`${label.padEnd(34)} ${formatTimes(await timeRuns(fn, iterations))}`);
}

/**
 * A 512x512 test render with the texture of a decoded SD image (shapes plus grain), so
 * PNG encoding costs what it would on real output. Procedural: nothing real.
 */
async function texturedRender(): Promise<Buffer> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="512" height="512">
    <defs><radialGradient id="g"><stop offset="0" stop-color="#b05030"/><stop offset="1" stop-color="#202848"/></radialGradient></defs>
    <rect width="512" height="512" fill="url(#g)"/><circle cx="180" cy="200" r="95" fill="#e0b060"/>
    <rect x="260" y="280" width="180" height="140" fill="#3a8a50" transform="rotate(15 350 350)"/></svg>`;
  const { data } = await sharp(Buffer.from(svg)).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  let seed = 12345;
  for (let i = 0; i < data.length; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    data[i] = Math.min(255, Math.max(0, data[i]! + ((seed >>> 16) % 17) - 8));
  }
  return sharp(data, { raw: { width: 512, height: 512, channels: 3 } }).png().toBuffer();
}

const dataDir = mkdtempSync(join(tmpdir(), 'redline-bench-prov-'));
try {
  let t = performance.now();
  const identity = await loadSigningIdentity({ dataDir, onCreate: () => {} });
  console.log(`local identity created and loaded in ${(performance.now() - t).toFixed(0)} ms (once per installation)`);
  t = performance.now();
  await loadSigningIdentity({ dataDir });
  console.log(`identity loaded in ${(performance.now() - t).toFixed(0)} ms (once per process)\n`);

  const png = await texturedRender();
  const payload = new Uint8Array(Buffer.from('5265646c696e', 'hex'));
  const infotext = 'concept art of a foggy harbour\nNegative prompt: text\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x512';
  const input = { infotext, modelHash: 'sha256:' + '0'.repeat(64), adapterHashes: { blood_framework: 'sha256:' + '1'.repeat(64) }, payload, identity };
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  const pixels = { data: new Uint8Array(data), width: info.width, height: info.height, channels: info.channels };
  const bits = bytesToBits(payload);
  const markedPixels = embedWatermark(pixels, bits);
  const markedPng = await sharp(markedPixels, { raw: { width: 512, height: 512, channels: 3 } }).png({ compressionLevel: 6 }).toBuffer();
  const chunks = [textChunk('parameters', infotext), itxtChunk(XMP_KEYWORD, buildXmpPacket({ digitalSourceType: TRAINED_ALGORITHMIC_MEDIA, creatorTool: 'Redline' }))];
  const withText = new Uint8Array(insertChunksBeforeImageData(markedPng, chunks));
  const signed = await applyProvenance(png, input);

  console.log(`512x512 image, ${iterations} runs each; input PNG ${png.length} bytes, marked ${signed.length} bytes`);
  await time('applyProvenance (all marks)', () => applyProvenance(png, input));
  await time('  decode PNG to pixels (sharp)', () => sharp(png).raw().toBuffer());
  await time('  watermark embed', () => embedWatermark(pixels, bits));
  await time('  PNG encode (sharp, level 6)', () => sharp(markedPixels, { raw: { width: 512, height: 512, channels: 3 } }).png({ compressionLevel: 6 }).toBuffer());
  await time('  parameters + XMP chunks', () => insertChunksBeforeImageData(markedPng, chunks));
  await time('  C2PA manifest + ES256 signature', () => signPng(withText, { modelHash: input.modelHash, adapterHashes: input.adapterHashes }, identity, '0.1.0'));
  await time('checkProvenance (all marks)', () => checkProvenance(signed, { trustAnchors: identity.trustAnchors }));
  await time('  watermark decode', () => decodeWatermark(pixels, bits.length));
} finally {
  rmSync(dataDir, { recursive: true, force: true });
}
