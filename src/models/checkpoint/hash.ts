// File hashes as the ecosystem writes them into infotext and model pages:
// - A1111 checkpoint "Model hash": first 10 hex digits of the file's sha256
//   (modules/sd_models.py CheckpointInfo.shorthash); Civitai lists the full sha256.
// - A1111 legacy model hash: sha256 of the 64 KiB at offset 1 MiB, first 8 digits
//   (the pre-2023 "model_hash"); still seen in old infotext.
// - kohya / sd-webui-additional-networks "addnet" hash: sha256 of everything after the
//   safetensors header (so editing metadata does not change it). A1111's Lora extension
//   hashes .safetensors LoRAs this way (hashes.sha256(..., use_addnet_hash=True)) and writes
//   its first 12 digits in `Lora hashes:`.
// Hashing a 4 GB checkpoint takes ~10 s, so results are cached in one JSON file keyed by
// path and validated by size and mtime.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

export interface FileHashes {
  /** Full sha256 of the file, lower-case hex. */
  sha256: string;
  /** sha256 of the bytes after the safetensors header; null for non-safetensors files. */
  addnet: string | null;
  /** sha256 of 64 KiB at offset 1 MiB, 8 hex digits (A1111 legacy hash; kohya sshs_legacy_hash). */
  legacy: string;
}

/** A1111's checkpoint "Model hash". */
export const modelShortHash = (h: FileHashes): string => h.sha256.slice(0, 10);
/** A1111's LoRA hash in `Lora hashes:` (addnet hash for .safetensors, else sha256). */
export const loraShortHash = (h: FileHashes): string => (h.addnet ?? h.sha256).slice(0, 12);

export function defaultHashCacheFile(): string {
  const base = process.env.REDLINE_CACHE_DIR ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'redline');
  return join(base, 'hashes.json');
}

interface CacheEntry extends FileHashes {
  size: number;
  mtimeMs: number;
}

function readCache(file: string): Record<string, CacheEntry> {
  try {
    const data = JSON.parse(readFileSync(file, 'utf8')) as unknown;
    return data && typeof data === 'object' && !Array.isArray(data) ? (data as Record<string, CacheEntry>) : {};
  } catch {
    return {};
  }
}

const CHUNK = 4 * 1024 * 1024;

/** Streams the file once, computing all three hashes. */
export async function computeFileHashes(path: string, onProgress?: (done: number, total: number) => void): Promise<FileHashes> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const full = createHash('sha256');
    const legacy = createHash('sha256');
    let addnet: ReturnType<typeof createHash> | null = null;
    let dataStart = Infinity;
    const buf = Buffer.alloc(CHUNK);
    let pos = 0;
    while (pos < size) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK, size - pos), pos);
      if (bytesRead === 0) break;
      const chunk = buf.subarray(0, bytesRead);
      if (pos === 0 && bytesRead >= 9 && chunk[8] === 0x7b) {
        const n = chunk.readBigUInt64LE(0);
        if (n <= BigInt(size - 8)) {
          dataStart = 8 + Number(n);
          addnet = createHash('sha256');
        }
      }
      full.update(chunk);
      if (addnet && pos + bytesRead > dataStart) addnet.update(chunk.subarray(Math.max(0, dataStart - pos)));
      const lo = Math.max(pos, 0x100000);
      const hi = Math.min(pos + bytesRead, 0x110000);
      if (hi > lo) legacy.update(chunk.subarray(lo - pos, hi - pos));
      pos += bytesRead;
      onProgress?.(pos, size);
    }
    return { sha256: full.digest('hex'), addnet: addnet ? addnet.digest('hex') : null, legacy: legacy.digest('hex').slice(0, 8) };
  } finally {
    await fh.close();
  }
}

/**
 * Hashes from the cache when size and mtime still match, else computed and stored.
 * `cacheFile: null` disables the cache.
 */
export async function fileHashes(
  path: string,
  opts: { cacheFile?: string | null; onProgress?: (done: number, total: number) => void } = {},
): Promise<FileHashes & { cached: boolean }> {
  const abs = resolve(path);
  const st = statSync(abs);
  const cacheFile = opts.cacheFile === undefined ? defaultHashCacheFile() : opts.cacheFile;
  if (cacheFile) {
    const hit = readCache(cacheFile)[abs];
    if (hit && hit.size === st.size && hit.mtimeMs === st.mtimeMs && typeof hit.sha256 === 'string' && /^[0-9a-f]{64}$/.test(hit.sha256)) {
      return { sha256: hit.sha256, addnet: hit.addnet ?? null, legacy: hit.legacy, cached: true };
    }
  }
  const h = await computeFileHashes(abs, opts.onProgress);
  if (cacheFile) {
    try {
      mkdirSync(dirname(cacheFile), { recursive: true });
      const cache = readCache(cacheFile);
      cache[abs] = { ...h, size: st.size, mtimeMs: st.mtimeMs };
      const tmp = `${cacheFile}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify(cache));
      renameSync(tmp, cacheFile); // atomic: parallel runs never read a half-written cache
    } catch {
      // The cache only saves time; an unwritable cache directory must not fail the listing.
    }
  }
  return { ...h, cached: false };
}
