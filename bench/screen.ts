// Screening throughput without the semantic layer, on one core (this process, one thread).
// Target: at least 5,000 prompts per second. Uses the benign and red-team prompt sets when
// present (../shared/redteam or $REDLINE_REDTEAM_DIR), else prompts built by code.
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { defaultPolicy } from '../src/safety/policy/policy.ts';
import { EVASION_KINDS, evade } from '../src/safety/screen/evasions.ts';
import { readPromptTable } from '../src/safety/screen/prompt-table.ts';
import { Screener } from '../src/safety/screen/screener.ts';
import { median } from './_timing.ts';

const redteamDir = process.env.REDLINE_REDTEAM_DIR
  ? resolve(process.env.REDLINE_REDTEAM_DIR)
  : resolve(import.meta.dirname, '..', '..', 'shared', 'redteam');

function prompts(): string[] {
  const out: string[] = [];
  const sets: [string, string][] = [['benign/coco.csv', 'prompt'], ['benign/PartiPrompts.tsv', 'Prompt'], ['i2p/i2p.csv', 'prompt'], ['hardblock.csv', 'prompt']];
  for (const [file, column] of sets) {
    const p = join(redteamDir, file);
    if (existsSync(p)) out.push(...readPromptTable(readFileSync(p, 'utf8'), { column, tsv: file.endsWith('.tsv') }).map((r) => r.prompt));
  }
  if (out.length === 0) {
    const words = ['a', 'portrait', 'of', 'an', 'old', 'knight', 'with', 'a', 'scratched', 'face', 'oil', 'painting', 'highly', 'detailed', 'bloody', 'mary', 'cocktail'];
    for (let i = 0; i < 5000; i++) out.push(Array.from({ length: 8 + (i % 20) }, (_, k) => words[(i * 7 + k * 3) % words.length]).join(' '));
  }
  // A share of evasion variants, which exercise the slower paths (confusables, re-joining).
  const base = out.slice(0, 500);
  base.forEach((p, i) => out.push(evade(p, EVASION_KINDS[i % EVASION_KINDS.length]!, i)));
  return out;
}

const screener = new Screener(defaultPolicy());
const set = prompts();
const chars = set.reduce((n, p) => n + p.length, 0);
// Warm-up: compiles the lexicon, fills the character cache, lets the JIT settle.
for (const p of set.slice(0, 2000)) screener.screen({ prompt: p }, 'creator');

// Screening is synchronous on the main thread, so CPU time of this process is time on one
// core; it is reported beside wall time because a shared machine's load inflates the latter.
const rounds = 5;
const wall: number[] = [];
const cpu: number[] = [];
for (let r = 0; r < rounds; r++) {
  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  for (const p of set) screener.screen({ prompt: p }, 'creator');
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = process.cpuUsage(c0);
  wall.push(set.length / s);
  cpu.push(set.length / ((c.user + c.system) / 1e6));
}
const best = (xs: number[]) => Math.max(...xs);
console.log(`screen: ${set.length} prompts (mean ${(chars / set.length).toFixed(0)} chars), ${rounds} rounds, semantic layer off`);
console.log(`  per CPU-second (one core): median ${median(cpu).toFixed(0)} prompts/s, best ${best(cpu).toFixed(0)}`);
console.log(`  wall clock:                median ${median(wall).toFixed(0)} prompts/s, best ${best(wall).toFixed(0)}`);
console.log(`  target >= 5000 prompts/s on one core: ${median(cpu) >= 5000 ? 'PASS' : 'FAIL'}`);
