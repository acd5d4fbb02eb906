import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServiceStore } from '../../src/service/store.ts';
import { bearer, postJson, startHarness, tempDir, waitForJob, type Harness } from './support/harness.ts';
import { runCli, startServe } from './support/processes.ts';

function ledgerCounts(path: string): Map<string, number> {
  const counts = new Map<string, number>();
  for (const line of readFileSync(path, 'utf8').split('\n').filter(Boolean)) {
    const id = line.split(' ')[0]!;
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

describe('embedded queue', () => {
  it('survives a crash: queued jobs run after restart, the cut-off job is retried once, none lost or duplicated', async () => {
    const dataDir = tempDir('restart');
    const ledger = join(dataDir, 'ledger.txt');
    writeFileSync(ledger, '');
    const key = runCli(['keys', 'create', '--role', 'studio', '--data-dir', dataDir]).stdout.trim();
    const env = { REDLINE_TEST_STEP_MS: '25', REDLINE_TEST_LEDGER: ledger };
    const procs: ReturnType<typeof startServe>[] = [];
    try {
      const first = startServe(dataDir, env);
      procs.push(first);
      const base = (await first.waitFor(/listening on (http:\/\/\S+)/))[1]!;
      const ids: string[] = [];
      for (let i = 0; i < 8; i++) {
        // The first job is long enough (150 x 25 ms) to be caught mid-run.
        const r = await postJson(`${base}/api/v1/jobs`, { prompt: `job ${i}`, width: 64, height: 64, steps: i === 0 ? 150 : 12, seed: i }, bearer(key));
        expect(r.status).toBe(202);
        ids.push(((await r.json()) as { id: string }).id);
      }
      // Kill the server hard while the first job is mid-run.
      for (const until = Date.now() + 30_000; ;) {
        if (Date.now() > until) throw new Error('first job never reached step 3 while running');
        const j = (await (await fetch(`${base}/api/v1/jobs/${ids[0]}`, { headers: bearer(key) })).json()) as { state: string; progress: { step: number } };
        if (j.state === 'running' && j.progress.step >= 3) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      await first.kill('SIGKILL');

      const store = new ServiceStore(dataDir);
      const states = ids.map((id) => store.getJob(id)!.state);
      store.close();
      expect(states[0]).toBe('running');
      expect(states.slice(1).every((s) => s === 'queued')).toBe(true);
      expect(ledgerCounts(ledger).size).toBe(0);

      const second = startServe(dataDir, env);
      procs.push(second);
      const base2 = (await second.waitFor(/listening on (http:\/\/\S+)/))[1]!;
      const finals = [];
      for (const id of ids) finals.push(await waitForJob(base2, key, id));
      await second.kill('SIGTERM');

      expect(finals.map((j) => j.state)).toEqual(ids.map(() => 'succeeded'));
      expect(finals.map((j) => j.attempts)).toEqual([2, 1, 1, 1, 1, 1, 1, 1]);
      const counts = ledgerCounts(ledger);
      expect([...counts.keys()].sort()).toEqual([...ids].sort());
      expect([...counts.values()].every((n) => n === 1)).toBe(true);
      const check = new ServiceStore(dataDir);
      expect(ids.map((id) => check.jobImages(id).length)).toEqual(ids.map(() => 1));
      check.close();
    } finally {
      for (const p of procs) await p.kill('SIGKILL');
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('fails a job that was cut off on its second attempt instead of retrying forever', () => {
    const dataDir = tempDir('retry');
    const store = new ServiceStore(dataDir);
    try {
      const screening = { verdict: 'allow', requestedIntensity: 0, effectiveIntensity: 0, categories: [], reason: '' };
      const a = store.insertJob({ caller: 'key:x', role: 'creator', mode: 'txt2img', request: {}, screening });
      const b = store.insertJob({ caller: 'key:x', role: 'creator', mode: 'txt2img', request: {}, screening });
      expect(store.claimNextJob()!.id).toBe(a.id);
      // First crash: a goes back to the queue, ahead of b.
      expect(store.recoverInterrupted(2)).toEqual({ requeued: [a.id], failed: [] });
      expect(store.claimNextJob()!.id).toBe(a.id);
      // Second crash during a's second attempt: a fails.
      expect(store.recoverInterrupted(2)).toEqual({ requeued: [], failed: [a.id] });
      expect(store.getJob(a.id)).toMatchObject({ state: 'failed', attempts: 2 });
      expect(store.getJob(a.id)!.error).toMatch(/interrupted 2 times/);
      expect(store.claimNextJob()!.id).toBe(b.id);
      expect(store.claimNextJob()).toBeUndefined();
    } finally {
      store.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  describe('20 concurrent clients, 100 jobs', () => {
    let h: Harness;
    beforeAll(async () => {
      h = await startHarness({ backend: { stepMs: 0 } });
    });
    afterAll(async () => h.close());

    it('completes every job exactly once', async () => {
      const clients = Array.from({ length: 20 }, (_, i) => h.server.ctx.store.createKey('creator', `client ${i}`).key);
      const submitted = await Promise.all(clients.map(async (key, c) => {
        const ids = await Promise.all(Array.from({ length: 5 }, async (_, j) => {
          const r = await postJson(`${h.base}/api/v1/jobs`, { prompt: `client ${c} job ${j}`, width: 64, height: 64, steps: 2, seed: c * 100 + j }, bearer(key));
          expect(r.status).toBe(202);
          return ((await r.json()) as { id: string }).id;
        }));
        const finals = await Promise.all(ids.map((id) => waitForJob(h.base, key, id, 120_000)));
        return finals;
      }));
      const all = submitted.flat();
      expect(all).toHaveLength(100);
      expect(new Set(all.map((j) => j.id)).size).toBe(100);
      expect(all.every((j) => j.state === 'succeeded' && j.attempts === 1)).toBe(true);
      expect(h.components.backend.completions.size).toBe(100);
      expect([...h.components.backend.completions.values()].every((n) => n === 1)).toBe(true);
      // One job at a time: the worker never overlapped two generations.
      const rows = all.map((j) => h.server.ctx.store.getJob(j.id as string)!).sort((a, b) => a.started_at! - b.started_at!);
      for (let i = 1; i < rows.length; i++) expect(rows[i]!.started_at!).toBeGreaterThanOrEqual(rows[i - 1]!.finished_at!);
    });
  });
});
