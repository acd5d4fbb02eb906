// bin/redline.js runs the CLI in a child process with glibc's huge-page tunable set (it can
// only be set before a process starts). These tests hold it to what a launcher must do:
// the child really gets the tunable, exit codes come back unchanged, a forwarded SIGTERM
// stops the CLI, and a launcher killed outright does not leave the CLI running as an orphan.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '../helpers/golden.ts';
import { testComponents } from '../service/support/processes.ts';

const cli = join(repoRoot, 'bin', 'redline.js');
const envWithout = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => {
  const env = { ...process.env };
  delete env.GLIBC_TUNABLES;
  delete env.REDLINE_NO_HUGEPAGES;
  return { ...env, ...extra };
};

function childPids(pid: number): number[] {
  const f = `/proc/${pid}/task/${pid}/children`;
  return existsSync(f) ? readFileSync(f, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number) : [];
}

function alive(pid: number): boolean {
  try {
    const state = /^State:\s+(\S)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
    return state !== undefined && state !== 'Z';
  } catch {
    return false;
  }
}

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return cond();
}

/** Starts `redline serve` (an event-loop-driven command, as generate, serve and worker are)
 * and returns the launcher and the CLI process ids once it listens. */
async function startServing(): Promise<{ launcher: ReturnType<typeof spawn>; cliPid: number }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'redline-launcher-'));
  const launcher = spawn(process.execPath, [cli, 'serve', '--port', '0', '--data-dir', dataDir, '--components', testComponents, '--log-level', 'warn'], { cwd: repoRoot, env: envWithout(), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  launcher.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  launcher.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  expect(await until(() => /listening on/.test(out), 60_000)).toBe(true);
  const pids = childPids(launcher.pid!);
  expect(pids).toHaveLength(1);
  return { launcher, cliPid: pids[0]! };
}

describe.runIf(process.platform === 'linux')('bin/redline.js launcher', () => {
  it('runs the CLI with glibc malloc huge pages on, unless REDLINE_NO_HUGEPAGES is set', () => {
    const on = JSON.parse(execFileSync(process.execPath, [cli, 'doctor', '--json'], { cwd: repoRoot, env: envWithout(), encoding: 'utf8' })) as { mallocHugePages: boolean };
    expect(on.mallocHugePages).toBe(true);
    const off = JSON.parse(execFileSync(process.execPath, [cli, 'doctor', '--json'], { cwd: repoRoot, env: envWithout({ REDLINE_NO_HUGEPAGES: '1' }), encoding: 'utf8' })) as { mallocHugePages: boolean };
    expect(off.mallocHugePages).toBe(false);
  });

  it('keeps tunables the caller set and adds its own', () => {
    const r = JSON.parse(execFileSync(process.execPath, [cli, 'doctor', '--json'], { cwd: repoRoot, env: { ...envWithout(), GLIBC_TUNABLES: 'glibc.malloc.arena_max=2' }, encoding: 'utf8' })) as { mallocHugePages: boolean };
    expect(r.mallocHugePages).toBe(true);
  });

  it('returns the CLI exit status and output unchanged', () => {
    const r = spawnSync(process.execPath, [cli, 'no-such-command'], { cwd: repoRoot, env: envWithout(), encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/unknown command 'no-such-command'/);
    const screened = spawnSync(process.execPath, [cli, 'screen', '-'], { cwd: repoRoot, env: envWithout(), input: 'a lighthouse at dusk\n', encoding: 'utf8' });
    expect(screened.status).toBe(0);
    expect(JSON.parse(screened.stdout.trim().split('\n')[0]!)).toMatchObject({ verdict: 'allow' });
  });

  it('forwards SIGTERM to the CLI', async () => {
    const { launcher, cliPid } = await startServing();
    const exited = new Promise<[number | null, NodeJS.Signals | null]>((r) => launcher.once('exit', (code, sig) => r([code, sig])));
    launcher.kill('SIGTERM');
    // serve stops cleanly on SIGTERM (exit 0), and the launcher exits as the CLI did
    expect(await exited).toEqual([0, null]);
    expect(await until(() => !alive(cliPid), 10_000)).toBe(true);
  });

  it('takes the CLI down when the launcher is killed outright', async () => {
    const { launcher, cliPid } = await startServing();
    expect(alive(cliPid)).toBe(true);
    launcher.kill('SIGKILL');
    expect(await until(() => !alive(cliPid), 10_000)).toBe(true);
  });
}, 60_000);
