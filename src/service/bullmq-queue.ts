import { Job, Queue, QueueEvents, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { RedlineError } from '../errors.ts';
import type { ServiceComponents } from './backend.ts';
import { executeJob, type ExecutionOutcome, type JobPayload } from './execute.ts';
import { MAX_ATTEMPTS, payloadOf, type JobQueue, type JobSink } from './queue.ts';
import type { JobRow, ServiceStore } from './store.ts';

// Scale-out queue: the server keeps its job rows in SQLite (owner, request, results) and
// hands the work to BullMQ on Redis; `redline worker` processes, each with its own model,
// take one job at a time. Images travel back as the BullMQ return value and the server
// persists them. A worker that dies mid-job leaves the job stalled; BullMQ moves it back
// to the queue once (maxStalledCount 1) and fails it the next time, which is the embedded
// queue's retry-once rule.

export const DEFAULT_QUEUE_NAME = 'redline-jobs';
const CANCEL_CHANNEL = 'redline:cancel';

interface WireOutcome {
  images: { idx: number; png: string; infotext: string; seed: number; provenance: ExecutionOutcome['images'][number]['provenance'] }[];
  info: Record<string, unknown>;
  blocks: ExecutionOutcome['blocks'];
  refused: string | null;
  stepTimesMs: number[];
}

function toWire(o: ExecutionOutcome): WireOutcome {
  return { ...o, images: o.images.map((im) => ({ ...im, png: im.png.toString('base64') })) };
}

function fromWire(w: WireOutcome): ExecutionOutcome {
  return { ...w, images: w.images.map((im) => ({ ...im, png: Buffer.from(im.png, 'base64') })) };
}

export function parseRedisUrl(url: string): { host: string; port: number; db: number; password?: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new RedlineError('bad_redis_url', `'${url}' is not a Redis URL.`, 'Use redis://HOST:PORT[/DB].');
  }
  if (u.protocol !== 'redis:') throw new RedlineError('bad_redis_url', `'${url}' is not a redis:// URL.`);
  return {
    host: u.hostname || '127.0.0.1',
    port: u.port ? Number(u.port) : 6379,
    db: u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0,
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
  };
}

export class BullQueue implements JobQueue {
  readonly kind = 'bullmq' as const;
  private readonly queue: Queue;
  private readonly events: QueueEvents;
  private readonly publisher: Redis;
  private sink: JobSink | null = null;
  private sweeper: NodeJS.Timeout | null = null;

  constructor(private readonly store: ServiceStore, redisUrl: string, readonly name = DEFAULT_QUEUE_NAME) {
    const connection = { ...parseRedisUrl(redisUrl), maxRetriesPerRequest: null };
    this.queue = new Queue(name, { connection });
    this.events = new QueueEvents(name, { connection });
    this.publisher = new Redis(connection);
  }

  async start(sink: JobSink): Promise<void> {
    this.sink = sink;
    this.events.on('active', ({ jobId }) => sink.started(jobId));
    this.events.on('progress', ({ jobId, data }) => {
      const d = data as { step: number; total: number; preview?: string };
      sink.progress(jobId, d.step, d.total, d.preview ? Buffer.from(d.preview, 'base64') : undefined);
    });
    this.events.on('completed', ({ jobId }) => void this.collect(jobId));
    this.events.on('failed', ({ jobId }) => void this.collect(jobId));
    await this.events.waitUntilReady();
    await this.queue.waitUntilReady();
    await this.reconcile();
    // Events are a fast path, not the record: a periodic sweep catches any the server
    // missed (a Redis reconnect drops the events in between).
    this.sweeper = setInterval(() => void this.reconcile().catch(() => undefined), 5000);
    this.sweeper.unref();
  }

  /** Brings jobs that finished (or vanished) while this server was not listening up to date. */
  private async reconcile(): Promise<void> {
    const open = this.store.db.prepare(`SELECT * FROM jobs WHERE state IN ('queued', 'running') ORDER BY seq`).all() as JobRow[];
    for (const row of open) {
      const job = await Job.fromId(this.queue, row.id);
      if (job) {
        await this.collect(row.id);
        continue;
      }
      // Not in Redis: re-read our row, which may have finished since the list was taken;
      // only a job still open here and unknown to Redis (lost with a Redis restart) is added
      // again. Adding an id BullMQ already has is a no-op.
      const fresh = this.store.getJob(row.id);
      if (fresh && (fresh.state === 'queued' || fresh.state === 'running')) await this.enqueue(fresh);
    }
  }

  private async collect(jobId: string): Promise<void> {
    const sink = this.sink!;
    const row = this.store.getJob(jobId);
    if (!row || (row.state !== 'queued' && row.state !== 'running')) return; // already recorded
    const job = await Job.fromId(this.queue, jobId);
    if (!job) return;
    const state = await job.getState();
    if (state === 'completed') {
      sink.outcome(jobId, fromWire(job.returnvalue as WireOutcome));
      sink.stepTimes((job.returnvalue as WireOutcome).stepTimesMs);
    } else if (state === 'failed') {
      if (job.failedReason === 'cancelled by the caller') sink.cancelled(jobId);
      else sink.failed(jobId, job.failedReason || 'worker failed');
    }
  }

  async enqueue(job: JobRow): Promise<void> {
    // Finished jobs stay in Redis for a day so that a late look-up finds them finished
    // rather than missing (a missing open job is re-added by the sweep).
    await this.queue.add('generate', payloadOf(job), {
      jobId: job.id, attempts: 1, removeOnComplete: { age: 86_400 }, removeOnFail: { age: 86_400 },
    });
  }

  async cancelRunning(jobId: string): Promise<void> {
    const job = await Job.fromId(this.queue, jobId);
    if (job && (await job.getState()) !== 'active') await job.remove().catch(() => undefined);
    await this.publisher.publish(CANCEL_CHANNEL, jobId);
  }

  async depth(): Promise<number> {
    return this.queue.getWaitingCount();
  }

  async close(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    await this.events.close();
    await this.queue.close();
    this.publisher.disconnect();
  }
}

export interface BullWorkerOptions {
  redisUrl: string;
  queueName?: string;
  components: ServiceComponents;
  /** How often active jobs are checked for a dead worker (ms). */
  stalledIntervalMs?: number;
  /** How long a worker's claim on a job lasts without renewal (ms); renewed at half that. */
  lockDurationMs?: number;
  log?: (msg: string, extra?: Record<string, unknown>) => void;
}

/** One `redline worker` process: one job at a time on its own backend. */
export async function startBullWorker(opts: BullWorkerOptions): Promise<{ close(): Promise<void> }> {
  const connection = { ...parseRedisUrl(opts.redisUrl), maxRetriesPerRequest: null };
  const controllers = new Map<string, AbortController>();
  const subscriber = new Redis(connection);
  await subscriber.subscribe(CANCEL_CHANNEL);
  subscriber.on('message', (_channel: string, jobId: string) => {
    controllers.get(jobId)?.abort(new Error('cancelled by the caller'));
  });
  const log = opts.log ?? (() => undefined);
  const worker = new Worker(
    opts.queueName ?? DEFAULT_QUEUE_NAME,
    async (job: Job) => {
      const payload = job.data as JobPayload;
      const controller = new AbortController();
      controllers.set(payload.jobId, controller);
      log('job started', { jobId: payload.jobId, attempt: job.attemptsStarted });
      try {
        const outcome = await executeJob(opts.components, payload, {
          signal: controller.signal,
          onProgress: (step, total, preview) => {
            void job.updateProgress({ step, total, ...(preview ? { preview: preview.toString('base64') } : {}) });
          },
        });
        log('job finished', { jobId: payload.jobId, images: outcome.images.length });
        return toWire(outcome);
      } catch (err) {
        if (controller.signal.aborted) throw new Error('cancelled by the caller');
        throw err;
      } finally {
        controllers.delete(payload.jobId);
      }
    },
    {
      connection,
      concurrency: 1,
      maxStalledCount: MAX_ATTEMPTS - 1,
      stalledInterval: opts.stalledIntervalMs ?? 30_000,
      lockDuration: opts.lockDurationMs ?? 30_000,
    },
  );
  await worker.waitUntilReady();
  return {
    async close() {
      await worker.close();
      subscriber.disconnect();
    },
  };
}
