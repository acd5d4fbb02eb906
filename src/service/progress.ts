import { EventEmitter } from 'node:events';
import type { JobState } from './store.ts';

export type JobEvent =
  | { type: 'state'; jobId: string; state: JobState }
  | { type: 'progress'; jobId: string; step: number; total: number; preview?: string }
  | { type: 'done'; jobId: string; state: JobState; error?: string | null };

export interface LiveProgress {
  step: number;
  total: number;
  /** Latest preview as base64 PNG, if the backend sent one. */
  preview: string | null;
  startedMs: number;
  updatedMs: number;
}

// In-memory fan-out of job events to SSE streams and /progress. The durable state lives in
// the store; this only carries what changes many times a second.
export class ProgressHub {
  private readonly emitter = new EventEmitter();
  private readonly live = new Map<string, LiveProgress>();

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  emit(event: JobEvent): void {
    if (event.type === 'progress') {
      const now = Date.now();
      const prev = this.live.get(event.jobId);
      this.live.set(event.jobId, {
        step: event.step,
        total: event.total,
        preview: event.preview ?? prev?.preview ?? null,
        startedMs: prev?.startedMs ?? now,
        updatedMs: now,
      });
    } else if (event.type === 'state' && event.state === 'running') {
      const now = Date.now();
      this.live.set(event.jobId, { step: 0, total: 0, preview: null, startedMs: now, updatedMs: now });
    } else if (event.type === 'done') {
      this.live.delete(event.jobId);
    }
    this.emitter.emit(event.jobId, event);
    this.emitter.emit('*', event);
  }

  progress(jobId: string): LiveProgress | undefined {
    return this.live.get(jobId);
  }

  /** Jobs running now (any worker reporting to this server). */
  running(): string[] {
    return [...this.live.keys()];
  }

  subscribe(jobId: string, fn: (e: JobEvent) => void): () => void {
    this.emitter.on(jobId, fn);
    return () => this.emitter.off(jobId, fn);
  }

  /** Tells every open stream the server is stopping. */
  shutdown(): void {
    this.emitter.emit('shutdown');
  }

  onShutdown(fn: () => void): () => void {
    this.emitter.on('shutdown', fn);
    return () => this.emitter.off('shutdown', fn);
  }

  subscribeAll(fn: (e: JobEvent) => void): () => void {
    this.emitter.on('*', fn);
    return () => this.emitter.off('*', fn);
  }
}
