import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The golden reference set: $REDLINE_GOLDEN_DIR, else ../shared/golden beside the checkout. */
export const goldenDir: string = process.env.REDLINE_GOLDEN_DIR
  ? resolve(process.env.REDLINE_GOLDEN_DIR)
  : resolve(repoRoot, '..', 'shared', 'golden');

export function goldenPath(...parts: string[]): string {
  const p = join(goldenDir, ...parts);
  if (!existsSync(p)) {
    throw new Error(`golden file missing: ${p} (set REDLINE_GOLDEN_DIR to the golden set)`);
  }
  return p;
}

/** Reads a golden JSON file. Python's json writes Infinity/-Infinity/NaN, which are not
 * JSON: outside strings they become 1e999 (parses to Infinity) and null. */
export function goldenJson<T = unknown>(...parts: string[]): T {
  const text = readFileSync(goldenPath(...parts), 'utf8');
  const fixed = text.replace(/"(?:[^"\\]|\\.)*"|-?Infinity|NaN/g, (m) =>
    m.startsWith('"') ? m : m === 'NaN' ? 'null' : m.replace('Infinity', '1e999'),
  );
  return JSON.parse(fixed) as T;
}

/** The red-team prompt sets beside the golden set. */
export const redteamDir: string = process.env.REDLINE_REDTEAM_DIR
  ? resolve(process.env.REDLINE_REDTEAM_DIR)
  : resolve(repoRoot, '..', 'shared', 'redteam');

export { repoRoot };
