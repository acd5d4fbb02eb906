import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { crc32, insertChunksBeforeImageData, itxtChunk, readChunks, readText, textChunk, writeChunks } from '../../../src/safety/provenance/png.ts';
import { buildXmpPacket, readDigitalSourceType, TRAINED_ALGORITHMIC_MEDIA, XMP_KEYWORD } from '../../../src/safety/provenance/xmp.ts';
import { RedlineError } from '../../../src/errors.ts';
import { gradientPng } from './images.ts';

describe('PNG chunks', () => {
  it('computes CRC-32 as PNG defines it', () => {
    // The standard check value of CRC-32/ISO-HDLC, and the CRC every PNG's IEND carries.
    expect(crc32(Buffer.from('123456789'))).toBe(0xcbf43926);
    expect(crc32(Buffer.from('IEND'))).toBe(0xae426082);
  });

  it('round-trips a file byte for byte', async () => {
    const png = await gradientPng(64, 64);
    expect(writeChunks(readChunks(png)).equals(png)).toBe(true);
  });

  it('writes a parameters chunk that libpng (via sharp) reads back, before IDAT', async () => {
    const infotext = 'a castle at dusk, (fog:1.2)\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 64x64';
    const marked = insertChunksBeforeImageData(await gradientPng(64, 64), [textChunk('parameters', infotext)]);
    const types = readChunks(marked).map((c) => c.type);
    expect(types.indexOf('tEXt')).toBeLessThan(types.indexOf('IDAT'));
    expect(readText(marked, 'parameters')).toBe(infotext);
    const meta = await sharp(marked).metadata();
    expect(meta.comments).toEqual([{ keyword: 'parameters', text: infotext }]);
  });

  it('falls back to iTXt for text outside Latin-1, as PIL does, and replaces rather than duplicates', async () => {
    const first = insertChunksBeforeImageData(await gradientPng(64, 64), [textChunk('parameters', 'old')]);
    const infotext = 'château, 城, émoji 🦊\nSteps: 20';
    const marked = insertChunksBeforeImageData(first, [textChunk('parameters', infotext)]);
    const texts = readChunks(marked).filter((c) => c.type === 'tEXt' || c.type === 'iTXt');
    expect(texts.map((c) => c.type)).toEqual(['iTXt']);
    expect(readText(marked, 'parameters')).toBe(infotext);
  });

  it('writes XMP with the IPTC digital source type that libvips (via sharp) reads', async () => {
    const xmp = buildXmpPacket({ digitalSourceType: TRAINED_ALGORITHMIC_MEDIA, creatorTool: 'Redline test' });
    const marked = insertChunksBeforeImageData(await gradientPng(64, 64), [itxtChunk(XMP_KEYWORD, xmp)]);
    const meta = await sharp(marked).metadata();
    expect(meta.xmp?.toString('utf8')).toBe(xmp);
    expect(readDigitalSourceType(meta.xmp!.toString('utf8'))).toBe('http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia');
  });

  it('reads the element and rdf:resource spellings of DigitalSourceType with any prefix', () => {
    const ns = 'xmlns:ext="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"';
    expect(readDigitalSourceType(`<rdf:Description ${ns}><ext:DigitalSourceType>http://x/y</ext:DigitalSourceType></rdf:Description>`)).toBe('http://x/y');
    expect(readDigitalSourceType(`<rdf:Description ${ns}><ext:DigitalSourceType rdf:resource="http://x/z"/></rdf:Description>`)).toBe('http://x/z');
    expect(readDigitalSourceType('<rdf:Description xmlns:Iptc4xmpExt="http://other/" Iptc4xmpExt:DigitalSourceType="http://x"/>')).toBeUndefined();
  });

  it('rejects damaged files with a clear error', async () => {
    const png = Buffer.from(await gradientPng(64, 64));
    png[40]! ^= 0xff;
    expect(() => readChunks(png)).toThrowError(RedlineError);
    expect(() => readChunks(png)).toThrow(/fails its CRC check/);
    expect(() => readChunks(Buffer.from('GIF89a'))).toThrow(/not a PNG/);
  });
});
