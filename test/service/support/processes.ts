import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { repoRoot } from '../../helpers/golden.ts';

export const cli = join(repoRoot, 'bin', 'redline.js');
export const testComponents = join(repoRoot, 'test', 'service', 'support', 'procedural-components.ts');

export function runCli(args: string[], input?: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { cwd: repoRoot, encoding: 'utf8', input, timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export interface Spawned {
  child: ChildProcess;
  stderr: () => string;
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts a long-running process (redline serve/worker, redis-server) and follows its output. */
export function start(command: string, args: string[], env: Record<string, string> = {}): Spawned {
  const child = spawn(command, args, { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const listeners = new Set<() => void>();
  const onData = (d: Buffer) => {
    out += d.toString();
    for (const l of listeners) l();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    child,
    stderr: () => out,
    waitFor(pattern, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = pattern.exec(out);
          if (m) { done(); resolve(m); }
        };
        const timer = setTimeout(() => { done(); reject(new Error(`timed out waiting for ${pattern} in output of ${command}:\n${out}`)); }, timeoutMs);
        const onExit = () => { done(); reject(new Error(`${command} exited (${child.exitCode}) before ${pattern}:\n${out}`)); };
        const done = () => { clearTimeout(timer); listeners.delete(check); child.off('exit', onExit); };
        listeners.add(check);
        child.once('exit', onExit);
        check();
      });
    },
    async kill(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export function startServe(dataDir: string, env: Record<string, string>, extra: string[] = []): Spawned {
  return start(process.execPath, [cli, 'serve', '--port', '0', '--data-dir', dataDir, '--components', testComponents, '--log-level', 'warn', ...extra], env);
}
