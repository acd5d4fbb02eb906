// Service overhead benchmark: `npx tsx bench/service.ts [jobs]`.
//
// Runs a real server on loopback with the procedural test backend (no model), so what is
// measured is the service itself: HTTP, auth, screening call, SQLite queue, worker hand-off,
// result storage and retrieval.
//  - API overhead per job: submit -> SSE 'done' -> GET result, minus the time the backend
//    spent inside generate(). Median and p95 over sequential jobs.
//  - /sdapi/v1/progress latency while a job runs.
//  - SSE latency: backend onProgress call -> event parsed by the client.
import { rmSync } from 'node:fs';
import type { GenerateOptions, GenerationRequest, GenerationResult } from '../src/service/backend.ts';
import { bearer, forEachSseEvent, postJson, startHarness } from '../test/service/support/harness.ts';
import { ProceduralBackend } from '../test/service/support/procedural-components.ts';

const jobs = Number(process.argv[2] ?? 200);

function stats(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  return `median ${q(0.5).toFixed(2)} ms, p95 ${q(0.95).toFixed(2)} ms, n=${s.length}`;
}

/** Wraps the procedural backend to time generate() and stamp each progress call. */
class TimedBackend extends ProceduralBackend {
  readonly generateMs = new Map<string, number>();
  readonly progressAt = new Map<string, number>();
  override async generate(req: GenerationRequest, opts: GenerateOptions): Promise<GenerationResult> {
    const t0 = performance.now();
    const r = await super.generate(req, {
      ...opts,
      onProgress: (step, total, preview) => {
        this.progressAt.set(`${opts.jobId}:${step}`, performance.now());
        opts.onProgress(step, total, preview);
      },
    });
    this.generateMs.set(opts.jobId, performance.now() - t0);
    return r;
  }
}

/** Follows a job's SSE stream until its 'done' event. */
function readUntilDone(res: Response, onEvent: (event: string, data: Record<string, unknown>) => void): Promise<void> {
  return forEachSseEvent(res, (event, data) => {
    onEvent(event, data);
    return event === 'done' ? 'stop' : undefined;
  });
}

async function main(): Promise<void> {
  const h = await startHarness({ backend: { stepMs: 0 } });
  const backend = new TimedBackend({ stepMs: 0, previewEvery: 1_000_000 });
  // Swap the harness backend for the timed one (same class of double).
  (h.server.ctx.components as { backend: unknown }).backend = backend;
  const key = h.keys.studio;
  const body = { prompt: 'bench', width: 64, height: 64, steps: 2, seed: 1 };
  try {
    // Warm-up.
    for (let i = 0; i < 10; i++) {
      const r = await postJson(`${h.base}/sdapi/v1/txt2img`, body, bearer(key));
      await r.arrayBuffer();
    }

    // 1. Native API: submit, follow SSE to done, fetch the result.
    const overhead: number[] = [];
    const total: number[] = [];
    for (let i = 0; i < jobs; i++) {
      const t0 = performance.now();
      const sub = await postJson(`${h.base}/api/v1/jobs`, body, bearer(key));
      const { id } = (await sub.json()) as { id: string };
      const sse = await fetch(`${h.base}/api/v1/jobs/${id}/events`, { headers: bearer(key) });
      await readUntilDone(sse, () => undefined);
      const res = await fetch(`${h.base}/api/v1/jobs/${id}/result`, { headers: bearer(key) });
      await res.json();
      const t = performance.now() - t0;
      total.push(t);
      overhead.push(t - backend.generateMs.get(id)!);
    }
    console.log(`native submit->result, total:     ${stats(total)}`);
    console.log(`native API overhead per job:      ${stats(overhead)}`);

    // 2. A1111 synchronous txt2img.
    const a1111: number[] = [];
    for (let i = 0; i < jobs; i++) {
      const before = new Set(backend.generateMs.keys());
      const t0 = performance.now();
      const r = await postJson(`${h.base}/sdapi/v1/txt2img`, body, bearer(key));
      await r.json();
      const t = performance.now() - t0;
      const id = [...backend.generateMs.keys()].find((k) => !before.has(k))!;
      a1111.push(t - backend.generateMs.get(id)!);
    }
    console.log(`A1111 txt2img API overhead:       ${stats(a1111)}`);

    // 3. While a long job runs: /progress latency and SSE delivery latency.
    const slow = new TimedBackend({ stepMs: 10, previewEvery: 10 });
    (h.server.ctx.components as { backend: unknown }).backend = slow;
    const sub = await postJson(`${h.base}/api/v1/jobs`, { ...body, steps: 150 }, bearer(key));
    const { id } = (await sub.json()) as { id: string };
    const sseLatency: number[] = [];
    const sse = fetch(`${h.base}/api/v1/jobs/${id}/events`, { headers: bearer(key) }).then((res) =>
      readUntilDone(res, (ev, data) => {
        if (ev !== 'progress') return;
        const sent = slow.progressAt.get(`${id}:${String(data.step)}`);
        if (sent !== undefined) sseLatency.push(performance.now() - sent);
      }),
    );
    const progressLatency: number[] = [];
    for (let i = 0; i < 100; i++) {
      const t0 = performance.now();
      const r = await fetch(`${h.base}/sdapi/v1/progress`, { headers: bearer(key) });
      await r.json();
      progressLatency.push(performance.now() - t0);
      await new Promise((res) => setTimeout(res, 5));
    }
    await sse;
    console.log(`/sdapi/v1/progress while running: ${stats(progressLatency)}`);
    console.log(`SSE progress delivery latency:    ${stats(sseLatency)}`);
  } finally {
    await h.close();
    rmSync(h.dataDir, { recursive: true, force: true });
  }
}

// The machine may be shared: the process's CPU time beside the wall time tells the two apart.
const cpu0 = process.cpuUsage();
const wall0 = performance.now();
await main();
const cpu = process.cpuUsage(cpu0);
console.log(`whole run: ${((cpu.user + cpu.system) / 1e6).toFixed(2)} CPU s (server and client in this process), ${((performance.now() - wall0) / 1000).toFixed(2)} s wall`);
