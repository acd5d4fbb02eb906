// Per-caller token buckets weighted by cost. One cost unit is one 512x512 image at 20 steps,
// so a creator's 40-unit bucket is 40 standard images, or 10 at 1024x1024 x 20 steps.
// Headers follow draft-ietf-httpapi-ratelimit-headers (RateLimit-Policy / RateLimit as
// structured-field lists: q quota, w window to refill fully; r remaining, t seconds until
// the request asked for would fit).

export const UNIT_PIXEL_STEPS = 512 * 512 * 20;

export function generationCost(r: { steps: number; width: number; height: number; batchSize: number; nIter: number }): number {
  return (r.steps * r.width * r.height * r.batchSize * r.nIter) / UNIT_PIXEL_STEPS;
}

interface Bucket {
  tokens: number;
  updatedMs: number;
}

export interface RateDecision {
  allowed: boolean;
  remaining: number;
  /** Seconds until `cost` tokens are available (0 when allowed). */
  retryAfterS: number;
  headers: Record<string, string>;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(private readonly now: () => number = () => Date.now()) {}

  /** Takes `cost` tokens from the caller's bucket if they are there; never goes negative. */
  take(caller: string, cost: number, rate: { capacity: number; refillPerSecond: number }): RateDecision {
    const t = this.now();
    const b = this.buckets.get(caller) ?? { tokens: rate.capacity, updatedMs: t };
    b.tokens = Math.min(rate.capacity, b.tokens + ((t - b.updatedMs) / 1000) * rate.refillPerSecond);
    b.updatedMs = t;
    this.buckets.set(caller, b);
    const allowed = cost <= b.tokens;
    if (allowed) b.tokens -= cost;
    const deficit = allowed ? 0 : cost - b.tokens;
    const retryAfterS = allowed
      ? 0
      : cost > rate.capacity || rate.refillPerSecond <= 0
        ? Number.POSITIVE_INFINITY
        : Math.ceil(deficit / rate.refillPerSecond);
    const windowS = rate.refillPerSecond > 0 ? Math.ceil(rate.capacity / rate.refillPerSecond) : 0;
    const remaining = Math.floor(b.tokens);
    const resetS = allowed
      ? rate.refillPerSecond > 0 ? Math.ceil((rate.capacity - b.tokens) / rate.refillPerSecond) : 0
      : Number.isFinite(retryAfterS) ? retryAfterS : windowS;
    return {
      allowed,
      remaining,
      retryAfterS,
      headers: {
        'RateLimit-Policy': `"cost";q=${Math.floor(rate.capacity)};w=${windowS}`,
        'RateLimit': `"cost";r=${remaining};t=${resetS}`,
      },
    };
  }
}
