import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, postJson, startHarness, tempDir, waitForJob, type Harness } from './support/harness.ts';
import { cli, freePort, start, testComponents, type Spawned } from './support/processes.ts';

// Scale-out queue against a real Redis: Debian's redis-server, started here on a loopback
// port with persistence off. Not installed = a failing test that says so, never a skip.
function requireRedisServer(): string {
  const which = spawnSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' });
  const path = which.stdout.trim();
  if (which.status !== 0 || !path) {
    throw new Error('redis-server is not installed; the BullMQ queue test needs it. Install it with `apt-get install -y redis-server` (Debian).');
  }
  return path;
}

function ledgerLines(path: string): { jobId: string; pid: string }[] {
  return readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => {
    const [jobId, pid] = l.split(' ') as [string, string];
    return { jobId, pid };
  });
}

describe('BullMQ queue with redline worker processes', () => {
  let redis: Spawned;
  let redisUrl: string;
  let h: Harness;
  const workers: Spawned[] = [];
  let dataDir: string;
  let ledger: string;

  const startWorker = async (stepMs: number) => {
    const w = start(process.execPath, [cli, 'worker', '--redis', redisUrl, '--components', testComponents, '--stalled-ms', '1000', '--lock-ms', '5000'], {
      REDLINE_TEST_STEP_MS: String(stepMs), REDLINE_TEST_LEDGER: ledger,
    });
    workers.push(w);
    await w.waitFor(/redline worker: ready/);
    return w;
  };

  beforeAll(async () => {
    const redisServer = requireRedisServer();
    dataDir = tempDir('bullmq');
    ledger = join(dataDir, 'ledger.txt');
    writeFileSync(ledger, '');
    const port = await freePort();
    redis = start(redisServer, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dataDir]);
    await redis.waitFor(/Ready to accept connections/);
    redisUrl = `redis://127.0.0.1:${port}`;
    h = await startHarness({ dataDir, server: { queue: { kind: 'bullmq', redisUrl } } });
  });

  afterAll(async () => {
    await h?.close();
    for (const w of workers) await w.kill('SIGKILL');
    await redis?.kill('SIGTERM');
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it('runs 100 jobs from 20 concurrent clients on two workers, each exactly once', async () => {
    await startWorker(1);
    await startWorker(1);
    const health = (await (await fetch(`${h.base}/api/v1/health`)).json()) as { queue: string };
    expect(health.queue).toBe('bullmq');

    const clients = Array.from({ length: 20 }, (_, i) => h.server.ctx.store.createKey('creator', `client ${i}`).key);
    const finals = (await Promise.all(clients.map(async (key, c) => {
      const ids = await Promise.all(Array.from({ length: 5 }, async (_, j) => {
        const r = await postJson(`${h.base}/api/v1/jobs`, { prompt: `client ${c} job ${j}`, width: 64, height: 64, steps: 2, seed: c * 100 + j }, bearer(key));
        expect(r.status).toBe(202);
        return ((await r.json()) as { id: string }).id;
      }));
      return Promise.all(ids.map((id) => waitForJob(h.base, key, id, 80_000)));
    }))).flat();

    expect(finals).toHaveLength(100);
    expect(finals.every((j) => j.state === 'succeeded')).toBe(true);
    const ids = finals.map((j) => j.id as string);
    expect(new Set(ids).size).toBe(100);
    const lines = ledgerLines(ledger);
    expect(lines.map((l) => l.jobId).sort()).toEqual([...ids].sort());
    // Both worker processes took work.
    expect(new Set(lines.map((l) => l.pid)).size).toBe(2);
    // Results came back through Redis and were stored by the server.
    expect(ids.every((id) => h.server.ctx.store.jobImages(id).length === 1)).toBe(true);
  });

  it('hands a job cut off by a dead worker to another worker once, and streams its progress', async () => {
    for (const w of workers.splice(0)) await w.kill('SIGTERM');
    const doomed = await startWorker(40);
    const key = h.keys.studio;
    const r = await postJson(`${h.base}/api/v1/jobs`, { prompt: 'long', width: 64, height: 64, steps: 60 }, bearer(key));
    const { id } = (await r.json()) as { id: string };
    await doomed.waitFor(new RegExp(`"msg":"job started","jobId":"${id}"`));
    for (let i = 0; i < 200 && h.server.ctx.store.getJob(id)!.progress_step < 2; i++) await new Promise((res) => setTimeout(res, 25));
    expect(h.server.ctx.store.getJob(id)!.progress_step).toBeGreaterThanOrEqual(2);
    await doomed.kill('SIGKILL');

    const rescuer = await startWorker(1);
    const final = await waitForJob(h.base, key, id, 60_000);
    expect(final.state).toBe('succeeded');
    await rescuer.waitFor(new RegExp(`"msg":"job finished","jobId":"${id}"`));
    expect(ledgerLines(ledger).filter((l) => l.jobId === id)).toHaveLength(1);
  });
});
