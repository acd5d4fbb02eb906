import { createHash } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { AuditSink } from './backend.ts';
import type { ExecutionOutcome } from './execute.ts';
import type { ServiceMetrics } from './metrics.ts';
import type { ProgressHub } from './progress.ts';
import type { JobQueue, JobSink } from './queue.ts';
import type { JobRow, JobState, ServiceStore } from './store.ts';

export class ServerStoppingError extends Error {
  override name = 'ServerStoppingError';
  constructor() {
    super('the server is stopping; the job stays queued and runs after restart');
  }
}

const FINAL: ReadonlySet<JobState> = new Set(['succeeded', 'failed', 'cancelled']);

/** Server side of the job lifecycle: persists what queues report and fans it out. */
export class JobService implements JobSink {
  private readonly waiters = new Map<string, Set<() => void>>();
  private readonly shutdown = new AbortController();

  constructor(
    private readonly store: ServiceStore,
    private readonly hub: ProgressHub,
    private readonly metrics: ServiceMetrics,
    private readonly audit: AuditSink | null,
    readonly queue: JobQueue,
    private readonly log: FastifyBaseLogger,
  ) {}

  async start(): Promise<void> {
    await this.queue.start(this);
  }

  async submit(job: JobRow): Promise<void> {
    await this.queue.enqueue(job);
  }

  /** Cancels a queued or running job; returns the state it ends up in (or is moving to). */
  async cancel(job: JobRow): Promise<JobState> {
    if (this.store.cancelQueued(job.id)) {
      this.finish(job.id);
      await this.queue.cancelRunning(job.id);
      return 'cancelled';
    }
    if (job.state === 'running') {
      await this.queue.cancelRunning(job.id);
      return 'running';
    }
    return job.state;
  }

  /** Ends every waitFor with ShutdownError, so a stopping server answers its callers. */
  stopWaiting(): void {
    this.shutdown.abort(new ServerStoppingError());
  }

  /** Resolves when the job reaches a final state; rejects with ServerStoppingError on stop. */
  waitFor(jobId: string): Promise<JobRow> {
    const signal = this.shutdown.signal;
    return new Promise((resolve, reject) => {
      const check = () => {
        const row = this.store.getJob(jobId);
        if (!row) { cleanup(); reject(new Error(`job ${jobId} vanished`)); return; }
        if (FINAL.has(row.state)) { cleanup(); resolve(row); }
      };
      const set = this.waiters.get(jobId) ?? new Set();
      this.waiters.set(jobId, set);
      set.add(check);
      const onAbort = () => { cleanup(); reject(signal.reason); };
      const cleanup = () => {
        set.delete(check);
        if (set.size === 0) this.waiters.delete(jobId);
        signal.removeEventListener('abort', onAbort);
      };
      if (signal.aborted) { reject(signal.reason); return; }
      signal.addEventListener('abort', onAbort);
      check();
    });
  }

  private finish(jobId: string): void {
    const row = this.store.getJob(jobId);
    if (row && FINAL.has(row.state)) {
      this.metrics.jobsFinished.inc({ state: row.state });
      this.hub.emit({ type: 'done', jobId, state: row.state, error: row.error });
    }
    for (const fn of [...(this.waiters.get(jobId) ?? [])]) fn();
  }

  // ---- JobSink ----

  started(jobId: string): void {
    this.store.markRunningIfQueued(jobId);
    this.hub.emit({ type: 'state', jobId, state: 'running' });
  }

  progress(jobId: string, step: number, total: number, previewPng?: Buffer): void {
    this.store.setProgress(jobId, step, total);
    this.hub.emit({ type: 'progress', jobId, step, total, ...(previewPng ? { preview: previewPng.toString('base64') } : {}) });
  }

  stepTimes(ms: number[]): void {
    for (const t of ms) this.metrics.unetStep.observe(t / 1000);
  }

  outcome(jobId: string, outcome: ExecutionOutcome): void {
    const row = this.store.getJob(jobId);
    // A result can be reported twice (BullMQ event and sweep); only the first counts.
    if (!row || FINAL.has(row.state)) return;
    for (const b of outcome.blocks) {
      this.store.recordBlock({ caller: row.caller, role: row.role, stage: b.stage, categories: b.categories, reason: b.reason, jobId });
      for (const category of b.categories.length ? b.categories : ['unspecified']) {
        this.metrics.blocks.inc({ stage: b.stage, category, reason: b.stage === 'input' ? 'refused' : 'blocked' });
      }
      void this.audit?.record({ kind: 'block', caller: row.caller, role: row.role, jobId, categories: b.categories.map((category) => ({ category })), reason: b.reason, detail: { stage: b.stage, scores: b.scores ?? {} } });
    }
    if (outcome.refused !== null) {
      this.store.failJob(jobId, `refused: ${outcome.refused}`, { refused: true });
    } else {
      const info = {
        ...outcome.info,
        blocked: outcome.blocks.filter((b) => b.stage === 'output').map((b) => ({ categories: b.categories, reason: b.reason })),
      };
      const stored = this.store.completeJob(
        jobId,
        outcome.images.map((im) => ({ idx: im.idx, png: im.png, infotext: im.infotext, seed: im.seed, provenance_json: im.provenance ? JSON.stringify(im.provenance) : null })),
        info,
      );
      if (!stored) {
        this.log.warn({ jobId }, 'result for a job that had already finished; ignored');
        return;
      }
      // Each returned image's hash (as stored, marks included) leads from an image to this
      // row, and its jobId to the request's screening rows.
      const outputs = outcome.images.map((im) => ({ sha256: createHash('sha256').update(im.png).digest('hex') }));
      void this.audit?.record({ kind: 'generation', caller: row.caller, role: row.role, jobId, ...(outputs.length ? { outputs } : {}), detail: { images: outcome.images.length, info } });
    }
    this.finish(jobId);
  }

  failed(jobId: string, error: string): void {
    this.log.error({ jobId, error }, 'job failed');
    this.store.failJob(jobId, error);
    this.finish(jobId);
  }

  cancelled(jobId: string): void {
    this.store.markCancelled(jobId);
    this.finish(jobId);
  }
}
