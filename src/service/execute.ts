import type {
  GenerationFields, GenerationRequest, OutputCheckContext, ProvenanceStatus, ScreeningResult, ServiceComponents, ServiceDecisions,
} from './backend.ts';

// Runs one job against the components: input checks, generation, output checks,
// provenance. Shared by the embedded worker and `redline worker` (BullMQ), so both paths
// apply the same checks. Everything it returns is plain data the server persists.

/** GenerationRequest as stored in the queue: images as base64, no screening (kept beside). */
export type StoredRequest = GenerationFields<string> & ServiceDecisions;

export interface JobPayload {
  jobId: string;
  caller: string;
  role: string;
  request: StoredRequest;
  screening: ScreeningResult;
}

export interface ExecutedImage {
  idx: number;
  png: Buffer;
  infotext: string;
  seed: number;
  provenance: ProvenanceStatus | null;
}

export interface ExecutionBlock {
  stage: 'input' | 'output';
  categories: string[];
  reason: string;
  scores?: Record<string, number>;
}

export interface ExecutionOutcome {
  images: ExecutedImage[];
  info: Record<string, unknown>;
  blocks: ExecutionBlock[];
  /** Set when an input check refused the job before sampling. */
  refused: string | null;
  stepTimesMs: number[];
}

/**
 * The Redline sampler name for an A1111 sampler and scheduler: Karras folds into the name
 * ("DPM++ 2M" + Karras -> "DPM++ 2M Karras"); a name that already says Karras stays.
 */
export function samplerWithScheduler(sampler: string, scheduler: string): string {
  return scheduler === 'Karras' && !/Karras$/.test(sampler) ? `${sampler} Karras` : sampler;
}

export function toGenerationRequest(stored: StoredRequest, screening: ScreeningResult): GenerationRequest {
  return {
    ...stored,
    // Jobs queued by earlier versions carry the field only when a reference was given.
    consentAttestation: stored.consentAttestation ?? null,
    initImages: stored.initImages.map((b) => Buffer.from(b, 'base64')),
    mask: stored.mask === null ? null : Buffer.from(stored.mask, 'base64'),
    screening,
  };
}

export async function executeJob(
  components: ServiceComponents,
  payload: JobPayload,
  opts: { signal: AbortSignal; onProgress(step: number, total: number, preview?: Buffer): void },
): Promise<ExecutionOutcome> {
  const request = toGenerationRequest(payload.request, payload.screening);
  const ctx: OutputCheckContext = { jobId: payload.jobId, role: payload.role, intensity: request.intensity, request };
  const blocks: ExecutionBlock[] = [];
  const checker = components.outputChecker;

  if (checker?.checkInput) {
    for (const png of request.initImages) {
      const verdict = await checker.checkInput(png, ctx);
      if (!verdict.allowed) {
        blocks.push({ stage: 'input', categories: verdict.categories, reason: verdict.reason });
        return { images: [], info: {}, blocks, refused: verdict.reason, stepTimesMs: [] };
      }
    }
  }

  const stepTimesMs: number[] = [];
  let last = performance.now();
  const result = await components.backend.generate(request, {
    jobId: payload.jobId,
    signal: opts.signal,
    onProgress(step, total, preview) {
      const now = performance.now();
      stepTimesMs.push(now - last);
      last = now;
      opts.onProgress(step, total, preview);
    },
  });
  opts.signal.throwIfAborted();

  const images: ExecutedImage[] = [];
  for (const [idx, im] of result.images.entries()) {
    let png = im.png;
    if (checker) {
      const verdict = await checker.check(png, ctx);
      if (verdict.action === 'block') {
        blocks.push({ stage: 'output', categories: verdict.categories, reason: verdict.reason, scores: verdict.scores });
        continue;
      }
      if (verdict.action === 'blur') {
        blocks.push({ stage: 'output', categories: verdict.categories, reason: verdict.reason, scores: verdict.scores });
        png = verdict.png;
      }
    }
    let provenance: ProvenanceStatus | null = null;
    if (components.provenance) {
      const marked = await components.provenance.mark(png, { ...ctx, infotext: im.infotext, info: result.info });
      png = marked.png;
      provenance = marked.status;
    }
    images.push({ idx, png, infotext: im.infotext, seed: im.seed, provenance });
  }
  return { images, info: result.info, blocks, refused: null, stepTimesMs };
}
