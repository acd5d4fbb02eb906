import type { ServiceComponents } from './backend.ts';
import { executeJob, type ExecutionOutcome, type JobPayload, type StoredRequest } from './execute.ts';
import type { JobRow, ServiceStore } from './store.ts';

/** What a queue reports back to the server, which owns persistence and events. */
export interface JobSink {
  started(jobId: string): void;
  progress(jobId: string, step: number, total: number, previewPng?: Buffer): void;
  stepTimes(ms: number[]): void;
  outcome(jobId: string, outcome: ExecutionOutcome): void;
  failed(jobId: string, error: string): void;
  cancelled(jobId: string): void;
}

export interface JobQueue {
  readonly kind: 'embedded' | 'bullmq';
  start(sink: JobSink): Promise<void>;
  /** The job row is already in the store, state 'queued'. */
  enqueue(job: JobRow): Promise<void>;
  /** Cancels a running job (queued ones are cancelled in the store by the caller). */
  cancelRunning(jobId: string): Promise<void>;
  close(): Promise<void>;
}

export function payloadOf(job: JobRow): JobPayload {
  return {
    jobId: job.id,
    caller: job.caller,
    role: job.role,
    request: JSON.parse(job.request_json) as StoredRequest,
    screening: JSON.parse(job.screening_json) as JobPayload['screening'],
  };
}

class ShutdownError extends Error {
  override name = 'ShutdownError';
}

// A job is tried at most twice: once, and once more if the process died while it ran.
export const MAX_ATTEMPTS = 2;

/**
 * The embedded queue: jobs live in SQLite, one in-process worker takes them one at a time
 * in submission order. The worker awaits the backend, whose heavy work runs off the event
 * loop (ONNX Runtime's own threads for the real pipeline); the backend reports each step
 * through onProgress and yields between steps, so HTTP requests are served meanwhile.
 */
export class EmbeddedQueue implements JobQueue {
  readonly kind = 'embedded' as const;
  private sink: JobSink | null = null;
  private closing = false;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private running: { id: string; controller: AbortController } | null = null;

  constructor(private readonly store: ServiceStore, private readonly components: ServiceComponents) {}

  async start(sink: JobSink): Promise<void> {
    this.sink = sink;
    this.store.recoverInterrupted(MAX_ATTEMPTS);
    this.loop = this.run();
  }

  async enqueue(_job: JobRow): Promise<void> {
    this.wake?.();
  }

  async cancelRunning(jobId: string): Promise<void> {
    if (this.running?.id === jobId) this.running.controller.abort(new Error('cancelled by the caller'));
  }

  async close(): Promise<void> {
    this.closing = true;
    this.running?.controller.abort(new ShutdownError('server shutting down'));
    this.wake?.();
    await this.loop;
  }

  private async run(): Promise<void> {
    const sink = this.sink!;
    while (!this.closing) {
      const job = this.store.claimNextJob();
      if (!job) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 1000);
          this.wake = () => { clearTimeout(timer); resolve(); };
        });
        this.wake = null;
        continue;
      }
      const controller = new AbortController();
      this.running = { id: job.id, controller };
      sink.started(job.id);
      try {
        const outcome = await executeJob(this.components, payloadOf(job), {
          signal: controller.signal,
          onProgress: (step, total, preview) => sink.progress(job.id, step, total, preview),
        });
        sink.stepTimes(outcome.stepTimesMs);
        sink.outcome(job.id, outcome);
      } catch (err) {
        const reason = controller.signal.aborted ? controller.signal.reason : err;
        if (reason instanceof ShutdownError) {
          // A clean stop is not a crash: the job goes back to the queue without using up its retry.
          this.store.db.prepare(`UPDATE jobs SET state = 'queued', attempts = attempts - 1, progress_step = 0 WHERE id = ? AND state = 'running'`).run(job.id);
        } else if (controller.signal.aborted) {
          sink.cancelled(job.id);
        } else {
          sink.failed(job.id, err instanceof Error ? err.message : String(err));
        }
      } finally {
        this.running = null;
      }
    }
  }
}
