// Vitest global setup: the test run gets its own cache folder, so tests never write compile
// -cache entries or the file-hash cache into the user's real ~/.cache/redline. One folder
// for the whole run (set before the test workers start, which inherit the environment),
// so a test that relies on a cache hit after an earlier test's miss still gets it; removed
// when the run ends.
//
// REDLINE_TEST_CACHE_DIR names a folder to use (and keep) instead, for someone who wants
// compiled graphs to carry over between runs without touching their real cache.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export default function setup(): () => void {
  const kept = process.env.REDLINE_TEST_CACHE_DIR;
  const dir = kept ? resolve(kept) : mkdtempSync(join(tmpdir(), 'redline-test-cache-'));
  mkdirSync(dir, { recursive: true });
  const previous = process.env.REDLINE_CACHE_DIR;
  process.env.REDLINE_CACHE_DIR = dir;
  return () => {
    if (previous === undefined) delete process.env.REDLINE_CACHE_DIR;
    else process.env.REDLINE_CACHE_DIR = previous;
    if (!kept) rmSync(dir, { recursive: true, force: true });
  };
}
