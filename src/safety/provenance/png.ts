// PNG at the chunk level: enough to read and insert the text chunks that carry A1111's
// `parameters` infotext and the XMP packet, without decoding or re-encoding pixels.
import { inflateSync } from 'node:zlib';
import { RedlineError } from '../../errors.ts';

export const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export interface PngChunk {
  /** Four-letter chunk type, e.g. 'IHDR', 'tEXt', 'caBX'. */
  type: string;
  data: Buffer;
}

/** A text chunk found in the file (tEXt, zTXt or iTXt), decoded. */
export interface PngText {
  keyword: string;
  text: string;
  chunkType: 'tEXt' | 'zTXt' | 'iTXt';
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** CRC-32 as PNG defines it (ISO 3309 / ITU-T V.42), over type and data. */
export function crc32(...parts: Uint8Array[]): number {
  let c = 0xffffffff;
  for (const part of parts) {
    for (let i = 0; i < part.length; i++) c = CRC_TABLE[(c ^ part[i]!) & 0xff]! ^ (c >>> 8);
  }
  return (c ^ 0xffffffff) >>> 0;
}

export function isPng(buf: Uint8Array): boolean {
  return buf.length >= 8 && Buffer.from(buf.buffer, buf.byteOffset, 8).equals(PNG_SIGNATURE);
}

/** Splits a PNG into its chunks, checking lengths and CRCs. */
export function readChunks(png: Uint8Array): PngChunk[] {
  const buf = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  if (!isPng(buf)) {
    throw new RedlineError('not_png', 'The file is not a PNG (signature missing).', 'Pass a PNG image.');
  }
  const chunks: PngChunk[] = [];
  let pos = 8;
  while (pos < buf.length) {
    if (pos + 12 > buf.length) {
      throw new RedlineError('png_truncated', `PNG truncated inside a chunk header at byte ${pos}.`, 'The file is damaged; regenerate or re-export it.');
    }
    const length = buf.readUInt32BE(pos);
    const type = buf.toString('latin1', pos + 4, pos + 8);
    const end = pos + 12 + length;
    if (end > buf.length) {
      throw new RedlineError('png_truncated', `PNG chunk '${type}' at byte ${pos} runs past the end of the file.`, 'The file is damaged; regenerate or re-export it.');
    }
    const data = buf.subarray(pos + 8, pos + 8 + length);
    const stored = buf.readUInt32BE(pos + 8 + length);
    if (crc32(buf.subarray(pos + 4, pos + 8), data) !== stored) {
      throw new RedlineError('png_bad_crc', `PNG chunk '${type}' at byte ${pos} fails its CRC check.`, 'The file is damaged; regenerate or re-export it.');
    }
    chunks.push({ type, data });
    pos = end;
    if (type === 'IEND') break;
  }
  if (chunks[0]?.type !== 'IHDR' || chunks.at(-1)?.type !== 'IEND') {
    throw new RedlineError('png_malformed', 'PNG must start with IHDR and end with IEND.', 'The file is damaged; regenerate or re-export it.');
  }
  return chunks;
}

export function writeChunks(chunks: readonly PngChunk[]): Buffer {
  const parts: Buffer[] = [PNG_SIGNATURE];
  for (const { type, data } of chunks) {
    if (!/^[A-Za-z]{4}$/.test(type)) throw new Error(`invalid PNG chunk type '${type}'`);
    const head = Buffer.alloc(8);
    head.writeUInt32BE(data.length, 0);
    head.write(type, 4, 'latin1');
    const tail = Buffer.alloc(4);
    tail.writeUInt32BE(crc32(head.subarray(4), data), 0);
    parts.push(head, data, tail);
  }
  return Buffer.concat(parts);
}

function checkKeyword(keyword: string): void {
  // PNG keywords: 1-79 Latin-1 printable characters, no leading/trailing/double spaces.
  if (!/^[\x20-\x7e\xa1-\xff]{1,79}$/.test(keyword) || /^ | $| {2}/.test(keyword)) {
    throw new Error(`invalid PNG text keyword '${keyword}'`);
  }
}

function isLatin1(text: string): boolean {
  return /^[\x00-\xff]*$/.test(text) && !text.includes('\0');
}

/**
 * A text chunk as PIL (and so A1111) writes it: tEXt when the text is Latin-1,
 * otherwise an uncompressed iTXt with UTF-8 text.
 */
export function textChunk(keyword: string, text: string): PngChunk {
  checkKeyword(keyword);
  if (isLatin1(text)) {
    return { type: 'tEXt', data: Buffer.concat([Buffer.from(keyword, 'latin1'), Buffer.from([0]), Buffer.from(text, 'latin1')]) };
  }
  return itxtChunk(keyword, text);
}

/** An uncompressed iTXt chunk (no language tag, no translated keyword). */
export function itxtChunk(keyword: string, text: string): PngChunk {
  checkKeyword(keyword);
  return {
    type: 'iTXt',
    // keyword NUL, compression flag 0, method 0, empty language NUL, empty translated keyword NUL
    data: Buffer.concat([Buffer.from(keyword, 'latin1'), Buffer.from([0, 0, 0, 0, 0]), Buffer.from(text, 'utf8')]),
  };
}

function decodeText(chunk: PngChunk): PngText | undefined {
  const { type, data } = chunk;
  if (type !== 'tEXt' && type !== 'zTXt' && type !== 'iTXt') return undefined;
  const nul = data.indexOf(0);
  if (nul < 1) throw new RedlineError('png_bad_text', `PNG ${type} chunk has no keyword.`, 'The file is damaged; regenerate or re-export it.');
  const keyword = data.toString('latin1', 0, nul);
  if (type === 'tEXt') return { keyword, text: data.toString('latin1', nul + 1), chunkType: type };
  if (type === 'zTXt') return { keyword, text: inflateSync(data.subarray(nul + 2)).toString('latin1'), chunkType: type };
  const compressed = data[nul + 1] === 1;
  const langEnd = data.indexOf(0, nul + 3);
  const transEnd = langEnd < 0 ? -1 : data.indexOf(0, langEnd + 1);
  if (transEnd < 0) throw new RedlineError('png_bad_text', `PNG iTXt chunk '${keyword}' is malformed.`, 'The file is damaged; regenerate or re-export it.');
  const body = data.subarray(transEnd + 1);
  return { keyword, text: (compressed ? inflateSync(body) : body).toString('utf8'), chunkType: type };
}

/** All text chunks in file order. */
export function readTextChunks(png: Uint8Array): PngText[] {
  return readChunks(png).flatMap((c) => decodeText(c) ?? []);
}

/** The first text chunk with this keyword, or undefined. */
export function readText(png: Uint8Array, keyword: string): string | undefined {
  return readTextChunks(png).find((t) => t.keyword === keyword)?.text;
}

/**
 * Inserts chunks just before the first IDAT (where PIL puts text chunks), after
 * removing existing text chunks with the same keywords so a file is never marked twice.
 */
export function insertChunksBeforeImageData(png: Uint8Array, added: readonly PngChunk[]): Buffer {
  const chunks = readChunks(png);
  const replacedKeywords = new Set(added.map((c) => decodeText(c)?.keyword).filter((k): k is string => k !== undefined));
  const kept = chunks.filter((c) => {
    const t = decodeText(c);
    return !t || !replacedKeywords.has(t.keyword);
  });
  const idat = kept.findIndex((c) => c.type === 'IDAT');
  if (idat < 0) throw new RedlineError('png_malformed', 'PNG has no IDAT chunk.', 'The file is damaged; regenerate or re-export it.');
  kept.splice(idat, 0, ...added);
  return writeChunks(kept);
}

export interface PngHeader {
  width: number;
  height: number;
  bitDepth: number;
  colorType: number;
}

export function readHeader(png: Uint8Array): PngHeader {
  const ihdr = readChunks(png)[0]!.data;
  return { width: ihdr.readUInt32BE(0), height: ihdr.readUInt32BE(4), bitDepth: ihdr[8]!, colorType: ihdr[9]! };
}
