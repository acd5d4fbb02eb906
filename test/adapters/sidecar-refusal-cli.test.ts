// The CLI's two adapter paths, end to end through bin/redline.js: `redline generate` refuses
// a prompt's <lora:> adapter whose sidecar is broken before loading the model, and
// `redline loras` marks such adapters REFUSED and exits 1.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CATEGORY_METADATA_KEY } from '../../src/adapters/registry.ts';
import { repoRoot } from '../helpers/golden.ts';
import { BROKEN_SIDECARS, VALID_GRADED_SIDECAR, writeAdapter, writeBrokenAdapters } from './sidecar-fixtures.ts';

const dir = mkdtempSync(join(tmpdir(), 'redline-sidecar-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const cli = (...args: string[]) =>
  spawnSync(process.execPath, [join(repoRoot, 'bin', 'redline.js'), ...args], { encoding: 'utf8', cwd: dir, env: { ...process.env, REDLINE_DATA_DIR: join(dir, 'data') } });

// Three cases keep the CLI runs few (each is a process start): a truncated sidecar, binary
// junk, and a graded category in the metadata with no sidecar.
const truncated = BROKEN_SIDECARS.find((c) => c.name === 'truncated')!;
const junk = BROKEN_SIDECARS.find((c) => c.name === 'junk')!;
const loras = join(dir, 'loras');
mkdirSync(loras);
writeBrokenAdapters(loras, [truncated, junk]);
writeAdapter(loras, 'declared', undefined, { [CATEGORY_METADATA_KEY]: 'graphic-injury' });
const calibrated = join(dir, 'calibrated');
mkdirSync(calibrated);
writeAdapter(calibrated, 'graded', { ...VALID_GRADED_SIDECAR, intensity: { '1': 0.3 } });
writeAdapter(calibrated, 'plain');

describe('redline generate with a refused adapter', () => {
  for (const [name, problem] of [[truncated.name, truncated.problem], [junk.name, junk.problem], ['declared', /metadata declares the category "graphic-injury" but it has no sidecar/]] as const) {
    it(`<lora:${name}:1> stops before the model loads, with the problem and a hint`, () => {
      const out = join(dir, `${name}.png`);
      const res = cli('generate', '--prompt', `a red circle on a blue background <lora:${name}:1>`, '--lora-dir', loras, '--steps', '1', '--out', out);
      expect(res.status, res.stdout).toBe(1);
      expect(res.stderr).toContain(`Adapter "${name}" is refused`);
      expect(res.stderr).toMatch(problem);
      expect(res.stderr).toMatch(/Restore |Put the adapter's own/);
      expect(res.stderr).not.toMatch(/loading /);
      expect(res.stderr).not.toMatch(/\n\s+at /); // a RedlineError, printed without a stack
      expect(existsSync(out)).toBe(false);
    });
  }
});

describe('redline loras', () => {
  it('marks each broken adapter REFUSED with its fix, and exits 1', () => {
    const res = cli('loras', loras, '--no-hash');
    expect(res.status).toBe(1);
    for (const name of [truncated.name, junk.name, 'declared']) {
      expect(res.stdout).toMatch(new RegExp(`^${name} [^\\n]*\\n  file: ${name}\\.safetensors\\n  REFUSED: Adapter "${name}" is refused[^\\n]*\\n  fix: `, 'm'));
    }
    expect(res.stderr).toMatch(/3 adapters are refused \(declared, junk, truncated\)/);
  });

  it('--json carries the refusal object', () => {
    const res = cli('loras', loras, '--no-hash', '--json');
    expect(res.status).toBe(1);
    const list = JSON.parse(res.stdout) as Array<{ name: string; refusal: { code: string; message: string; hint: string } | null }>;
    expect(Object.fromEntries(list.map((a) => [a.name, a.refusal?.code]))).toEqual({
      declared: 'adapter_sidecar_missing', junk: 'adapter_sidecar_invalid', truncated: 'adapter_sidecar_invalid',
    });
  });

  it('a graded sidecar that calibrates only level 1 is refused as the safety layer would; a plain LoRA is not', () => {
    const res = cli('loras', calibrated, '--no-hash', '--json');
    expect(res.status).toBe(1);
    const list = JSON.parse(res.stdout) as Array<{ name: string; refusal: { code: string; message: string } | null }>;
    const graded = list.find((a) => a.name === 'graded')!;
    expect(graded.refusal?.code).toBe('bad_calibration');
    expect(graded.refusal?.message).toMatch(/^Adapter "graded" is refused: graded\.json: intensity\.2 must be a strength between 0 and 2/);
    expect(list.find((a) => a.name === 'plain')!.refusal).toBeNull();
  });
});
