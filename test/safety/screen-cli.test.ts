import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseDelimited, readPromptTable } from '../../src/safety/screen/prompt-table.ts';
import { repoRoot } from '../helpers/golden.ts';

const cli = join(repoRoot, 'bin', 'redline.js');
const redline = (args: string[], input?: string) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', input });

describe('prompt tables', () => {
  it('parses RFC 4180 CSV: quotes, doubled quotes, embedded commas and newlines', () => {
    expect(parseDelimited('a,b\n"x, y","say ""hi"""\n"multi\nline",z\r\n', ',')).toEqual([['a', 'b'], ['x, y', 'say "hi"'], ['multi\nline', 'z']]);
    expect(() => parseDelimited('a\n"open', ',')).toThrow(/quoted field/);
  });

  it('reads a named column of CSV or TSV, and plain lines', () => {
    expect(readPromptTable('id,prompt\n1,"a cat, sleeping"\n2,a dog\n', { column: 'prompt' }).map((r) => r.prompt)).toEqual(['a cat, sleeping', 'a dog']);
    expect(readPromptTable('Prompt\tCategory\nbond\tAbstract\n', { column: 'Prompt' }).map((r) => r.prompt)).toEqual(['bond']);
    expect(readPromptTable('one\n\ntwo\n')).toEqual([{ row: 1, prompt: 'one' }, { row: 3, prompt: 'two' }]);
    expect(() => readPromptTable('a,b\n1,2\n', { column: 'prompt', source: 'x.csv' })).toThrow(/x\.csv has no column 'prompt'.*Columns: a, b/);
  });
});

describe('redline screen', () => {
  it('prints one JSON object per prompt and a summary on stderr', () => {
    const r = redline(['screen', '--role', 'creator', '-'], 'a lighthouse at dawn\nsplatter film still, gore everywhere\nnaked child\n');
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => [l.verdict, l.intensity, l.effective_intensity])).toEqual([['allow', 0, 0], ['clamp', 3, 2], ['refuse', 0, 0]]);
    expect(lines[2]!.categories).toContain('minors_sexual');
    expect(r.stderr).toMatch(/screened 3 prompts as role 'creator'.*allow 1.*clamp 1.*refuse 1/);
  });

  it('reads a CSV column and applies the role and policy given', () => {
    const dir = mkdtempSync(join(tmpdir(), 'redline-screen-'));
    const csv = join(dir, 'p.csv');
    writeFileSync(csv, 'id,text\n1,"a knight, bleeding from a head wound"\n');
    const policy = join(dir, 'policy.json');
    const viewer = redline(['screen', '--role', 'viewer', '--column', 'text', csv]);
    expect(JSON.parse(viewer.stdout)).toMatchObject({ row: 1, verdict: 'clamp', intensity: 2, effective_intensity: 0 });
    writeFileSync(policy, JSON.stringify({ version: 1, categories: { minors_graded: { enabled: true } } }));
    const bad = redline(['screen', '--policy', policy, csv]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/policy\.categories\.minors_graded: 'minors_graded' is a hard-blocked category/);
    expect(bad.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });
});
