import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

// Prometheus metrics for one server. A registry per server instance (not the global one)
// so several servers in one process, as in the tests, do not share counters.
export class ServiceMetrics {
  readonly registry = new Registry();
  readonly httpRequests: Counter<'method' | 'route' | 'status'>;
  readonly httpDuration: Histogram<'method' | 'route'>;
  readonly jobsByState: Gauge<'state'>;
  readonly queueDepth: Gauge;
  readonly jobsFinished: Counter<'state'>;
  readonly unetStep: Histogram;
  readonly blocks: Counter<'stage' | 'category' | 'reason'>;
  readonly intensity: Counter<'requested' | 'effective' | 'verdict'>;
  readonly rateLimited: Counter<'role'>;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'redline_process_' });
    const registers = [this.registry];
    this.httpRequests = new Counter({ name: 'redline_http_requests_total', help: 'HTTP requests by route and status', labelNames: ['method', 'route', 'status'], registers });
    this.httpDuration = new Histogram({
      name: 'redline_http_request_duration_seconds', help: 'HTTP request latency', labelNames: ['method', 'route'], registers,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60],
    });
    this.jobsByState = new Gauge({ name: 'redline_jobs', help: 'Jobs by state', labelNames: ['state'], registers });
    this.queueDepth = new Gauge({ name: 'redline_queue_depth', help: 'Jobs waiting to run', registers });
    this.jobsFinished = new Counter({ name: 'redline_jobs_finished_total', help: 'Jobs finished by final state', labelNames: ['state'], registers });
    this.unetStep = new Histogram({
      name: 'redline_unet_step_seconds', help: 'Time per sampling step (UNet evaluation) as reported by the backend', registers,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    });
    this.blocks = new Counter({ name: 'redline_blocks_total', help: 'Refused requests and blocked images by stage, category and reason', labelNames: ['stage', 'category', 'reason'], registers });
    this.intensity = new Counter({ name: 'redline_intensity_total', help: 'Screened generation requests by requested and effective intensity', labelNames: ['requested', 'effective', 'verdict'], registers });
    this.rateLimited = new Counter({ name: 'redline_rate_limited_total', help: 'Requests refused by the rate limiter', labelNames: ['role'], registers });
  }
}
