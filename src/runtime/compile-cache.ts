// Bookkeeping of the compile cache (compile.ts): a size cap with least-recently-used
// eviction that never removes an entry a live session uses.
//
// Layout: <cacheDir>/<graph>-<32 hex>/ holds model.onnx (+ .data), `last-used` (its mtime is
// the entry's last use) and `leases/<pid>.<n>@<host>`, one file per live session created from
// the entry. A process that dies without releasing leaves its lease behind; a lease whose
// process no longer exists on this host does not count. Leases from other hosts (a cache on a
// shared filesystem) always count, since their processes cannot be checked from here.

import { existsSync, lstatSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { RedlineError } from '../errors.ts';

/** Default cap: room for the compiled models of about five SD 1.5 checkpoints (UNet 3.4 GB,
 * text encoder 0.5 GB and VAE 0.2 GB each, as f32). */
export const DEFAULT_CACHE_MAX_BYTES = 20 * 2 ** 30;
/** Overrides the default cap, in GiB (decimals allowed; 0 keeps only entries in use). */
export const CACHE_MAX_ENV = 'REDLINE_ONNX_CACHE_MAX_GB';

const ENTRY_NAME = /^[\w.-]+-[0-9a-f]{32}$/;
const PARTIAL_NAME = /^([\w.-]+-[0-9a-f]{32})\.(partial|evicting)-(\d+)$/;
const LAST_USED = 'last-used';
const LEASES = 'leases';

/** The cap from CACHE_MAX_ENV, else DEFAULT_CACHE_MAX_BYTES. */
export function cacheMaxBytesFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env[CACHE_MAX_ENV];
  if (raw === undefined || raw.trim() === '') return DEFAULT_CACHE_MAX_BYTES;
  const gib = Number(raw);
  if (!Number.isFinite(gib) || gib < 0) {
    throw new RedlineError('cache_limit_invalid', `${CACHE_MAX_ENV}="${raw}" is not a size in GiB.`, `Set ${CACHE_MAX_ENV} to a number of GiB such as 20, or unset it for the default (${DEFAULT_CACHE_MAX_BYTES / 2 ** 30}).`);
  }
  return Math.floor(gib * 2 ** 30);
}

export interface CacheEntry {
  /** Folder name, `<graph>-<key>`. */
  name: string;
  path: string;
  /** Bytes the entry alone holds (files hard-linked from elsewhere, e.g. a checkpoint's
   * weights, are not counted: removing the entry would not free them). */
  bytes: number;
  /** ms since the epoch of the last session created from it (or of its creation). */
  lastUsed: number;
  /** Some live session (this process or another on this host) uses it. */
  inUse: boolean;
}

function pidAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function leaseLive(file: string): boolean {
  const m = /^(\d+)\.\d+@(.*)$/.exec(file);
  if (!m) return true; // not ours to judge: count it
  if (m[2] !== hostname()) return true;
  return pidAlive(Number(m[1]));
}

function ownedBytes(path: string): number {
  let n = 0;
  for (const name of readdirSync(path)) {
    const p = join(path, name);
    const st = lstatSync(p);
    if (st.isDirectory()) n += ownedBytes(p);
    else if (st.isFile() && st.nlink === 1) n += st.size;
  }
  return n;
}

function hasLiveLease(entryPath: string): boolean {
  const dir = join(entryPath, LEASES);
  if (!existsSync(dir)) return false;
  return readdirSync(dir).some(leaseLive);
}

function lastUsed(entryPath: string): number {
  const marker = join(entryPath, LAST_USED);
  return (existsSync(marker) ? statSync(marker) : statSync(entryPath)).mtimeMs;
}

/** The cache's entries, least recently used first. Folders that are not entries are ignored. */
export function listCacheEntries(cacheDir: string): CacheEntry[] {
  if (!existsSync(cacheDir)) return [];
  const entries: CacheEntry[] = [];
  for (const name of readdirSync(cacheDir)) {
    if (!ENTRY_NAME.test(name)) continue;
    const path = join(cacheDir, name);
    try {
      if (!statSync(path).isDirectory()) continue;
      entries.push({ name, path, bytes: ownedBytes(path), lastUsed: lastUsed(path), inUse: hasLiveLease(path) });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err; // evicted meanwhile
    }
  }
  return entries.sort((a, b) => a.lastUsed - b.lastUsed || a.name.localeCompare(b.name));
}

/** A hold on a cache entry: while held, no process evicts the entry. */
export interface Lease {
  release(): void;
}

const held = new Set<string>();
let leaseCounter = 0;
let exitHookInstalled = false;

/**
 * Marks the entry at `entryPath` used now and leases it until `release()` (or this process
 * exits). Undefined when the entry no longer exists (evicted meanwhile): treat as a miss.
 */
export function leaseEntry(entryPath: string): Lease | undefined {
  const dir = join(entryPath, LEASES);
  try {
    mkdirSync(dir); // not recursive: must fail when the entry itself is gone
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    if (code !== 'EEXIST') throw err;
  }
  const file = join(dir, `${process.pid}.${leaseCounter++}@${hostname()}`);
  try {
    writeFileSync(file, '');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  touch(entryPath);
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const f of held) rmSync(f, { force: true });
    });
  }
  held.add(file);
  let released = false;
  return {
    release(): void {
      if (released) return;
      released = true;
      held.delete(file);
      try {
        unlinkSync(file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    },
  };
}

function touch(entryPath: string): void {
  const marker = join(entryPath, LAST_USED);
  const now = new Date();
  try {
    if (!existsSync(marker)) writeFileSync(marker, '');
    utimesSync(marker, now, now);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

export interface PruneResult {
  evicted: string[];
  /** Bytes the remaining entries hold. */
  bytes: number;
}

/**
 * Evicts least-recently-used entries until the cache holds at most `maxBytes`, skipping
 * entries in use and those named in `keep`; also removes leftovers of processes that died
 * while writing or evicting. The cap can stay exceeded when what remains is in use.
 */
export function pruneCache(cacheDir: string, maxBytes: number, opts: { keep?: readonly string[] } = {}): PruneResult {
  if (!existsSync(cacheDir)) return { evicted: [], bytes: 0 };
  for (const name of readdirSync(cacheDir)) {
    const m = PARTIAL_NAME.exec(name);
    if (!m) continue;
    const path = join(cacheDir, name);
    const stale = m[2] === 'partial' ? !pidAlive(Number(m[3])) : !hasLiveLease(path);
    if (stale) rmSync(path, { recursive: true, force: true });
  }
  const keep = new Set(opts.keep ?? []);
  const entries = listCacheEntries(cacheDir);
  let bytes = entries.reduce((n, e) => n + e.bytes, 0);
  const evicted: string[] = [];
  for (const e of entries) {
    if (bytes <= maxBytes) break;
    if (e.inUse || keep.has(e.name) || keep.has(e.path)) continue;
    if (evict(e)) {
      evicted.push(e.name);
      bytes -= e.bytes;
    }
  }
  return { evicted, bytes };
}

/** Renames the entry aside (atomic: a process looking it up from now on misses), checks once
 * more that no lease was taken before the rename, then deletes it. */
function evict(e: CacheEntry): boolean {
  const aside = `${e.path}.evicting-${process.pid}`;
  try {
    renameSync(e.path, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false; // someone else evicted it
    throw err;
  }
  if (hasLiveLease(aside)) {
    try {
      renameSync(aside, e.path);
    } catch {
      // rebuilt meanwhile: the copy stays aside, in use, until a later prune finds it unused
    }
    return false;
  }
  rmSync(aside, { recursive: true, force: true });
  return true;
}
