import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { SESSION_COOKIE, sendError } from '../auth.ts';
import type { ScreeningResult } from '../backend.ts';
import type { JobEvent } from '../progress.ts';
import type { JobRow, JobState, ServiceStore } from '../store.ts';
import { rethrowAsSubmission, SubmissionError, submitGeneration, type ServiceContext, type SubmissionInput } from '../submit.ts';
import type { ProgressHub } from '../progress.ts';
import { securityHeaders } from '../hardening.ts';

type Ctx = ServiceContext & { hub: ProgressHub };

const errorSchema = {
  type: 'object',
  properties: { error: { type: 'object', properties: { code: { type: 'string' }, message: { type: 'string' }, request_id: { type: 'string' } } } },
};

export const jobRequestSchema = {
  type: 'object',
  required: ['prompt'],
  additionalProperties: false,
  properties: {
    mode: { type: 'string', enum: ['txt2img', 'img2img'], default: 'txt2img' },
    prompt: { type: 'string', maxLength: 8000 },
    negative_prompt: { type: 'string', maxLength: 8000, default: '' },
    adapters: {
      type: 'array', maxItems: 16, default: [],
      items: { type: 'object', required: ['name'], additionalProperties: false, properties: { name: { type: 'string', maxLength: 256 }, weight: { type: 'number', default: 1 } } },
    },
    sampler_name: { type: 'string', maxLength: 64, default: 'Euler a' },
    scheduler: { type: 'string', maxLength: 64, default: 'Automatic' },
    steps: { type: 'integer', minimum: 1, maximum: 500, default: 20 },
    cfg_scale: { type: 'number', minimum: 0, maximum: 50, default: 7 },
    seed: { type: 'integer', minimum: -1, maximum: 18446744073709552000, default: -1 },
    subseed: { type: 'integer', minimum: -1, default: -1 },
    subseed_strength: { type: 'number', minimum: 0, maximum: 1, default: 0 },
    width: { type: 'integer', minimum: 64, maximum: 4096, default: 512 },
    height: { type: 'integer', minimum: 64, maximum: 4096, default: 512 },
    batch_size: { type: 'integer', minimum: 1, maximum: 64, default: 1 },
    n_iter: { type: 'integer', minimum: 1, maximum: 64, default: 1 },
    clip_skip: { type: 'integer', minimum: 1, maximum: 12, default: 1 },
    eta: { type: ['number', 'null'], default: null },
    denoising_strength: { type: ['number', 'null'], minimum: 0, maximum: 1, default: null },
    init_images: { type: 'array', maxItems: 4, items: { type: 'string' }, default: [] },
    init_image_url: { type: ['string', 'null'], maxLength: 2048, default: null },
    mask: { type: ['string', 'null'], default: null },
    model: { type: ['string', 'null'], maxLength: 512, default: null },
    intensity: { type: ['integer', 'null'], minimum: 0, maximum: 3, default: null, description: 'Requested graded intensity; capped by the caller\'s role, never raised by it' },
    consent_attestation_ref: { type: ['string', 'null'], maxLength: 256, default: null, description: 'img2img: reference of the pictured person\'s signed consent; needed to grade a photographed face when the caller\'s role has the consent workflow; stored in the audit log' },
    hires: {
      type: ['object', 'null'], default: null, additionalProperties: false,
      description: 'txt2img: A1111\'s hires fix; width x height is the first pass, the size limits apply to the target',
      properties: {
        scale: { type: 'number', default: 2, description: 'upscale factor (A1111 hr_scale), used when resize_x and resize_y are 0' },
        resize_x: { type: 'integer', minimum: 0, default: 0 },
        resize_y: { type: 'integer', minimum: 0, default: 0 },
        upscaler: { type: ['string', 'null'], maxLength: 64, default: null, description: 'Latent, Latent (antialiased), Latent (bicubic), Latent (bicubic antialiased), Latent (nearest), Latent (nearest-exact), None, Lanczos or Nearest; null = Latent' },
        second_pass_steps: { type: 'integer', minimum: 0, default: 0, description: '0 = the first pass\'s steps' },
        denoising_strength: { type: 'number', minimum: 0, maximum: 1, default: 0.7 },
        prompt: { type: ['string', 'null'], maxLength: 8000, default: null, description: 'the second pass\'s prompt (A1111 hr_prompt); null or empty = the prompt; screened like it; its <lora:> tags must be the prompt\'s' },
        negative_prompt: { type: ['string', 'null'], maxLength: 8000, default: null, description: 'A1111 hr_negative_prompt; null or empty = the negative prompt' },
        sampler_name: { type: ['string', 'null'], maxLength: 64, default: null, description: 'the second pass\'s sampler (e.g. "DPM++ 2M Karras"); null = sampler_name' },
      },
    },
    pad_cond_uncond: { type: 'boolean', default: false, description: 'A1111\'s "Pad prompt/negative prompt": the shorter conditioning gets the empty prompt\'s appended so both run in one UNet batch (changes the image)' },
  },
} as const;

export interface NativeJobBody {
  mode: 'txt2img' | 'img2img';
  prompt: string;
  negative_prompt: string;
  adapters: { name: string; weight: number }[];
  sampler_name: string;
  scheduler: string;
  steps: number;
  cfg_scale: number;
  seed: number;
  subseed: number;
  subseed_strength: number;
  width: number;
  height: number;
  batch_size: number;
  n_iter: number;
  clip_skip: number;
  eta: number | null;
  denoising_strength: number | null;
  init_images: string[];
  init_image_url: string | null;
  mask: string | null;
  model: string | null;
  intensity: number | null;
  consent_attestation_ref: string | null;
  hires: {
    scale: number; resize_x: number; resize_y: number; upscaler: string | null; second_pass_steps: number; denoising_strength: number;
    prompt: string | null; negative_prompt: string | null; sampler_name: string | null;
  } | null;
  pad_cond_uncond: boolean;
}

function nativeToInput(b: NativeJobBody): SubmissionInput {
  return {
    mode: b.mode, prompt: b.prompt, negativePrompt: b.negative_prompt, adapters: b.adapters.map((a) => ({ name: a.name, weight: a.weight })),
    sampler: b.sampler_name, scheduler: b.scheduler, steps: b.steps, cfgScale: b.cfg_scale, seed: b.seed, subseed: b.subseed,
    subseedStrength: b.subseed_strength, width: b.width, height: b.height, batchSize: b.batch_size, nIter: b.n_iter, clipSkip: b.clip_skip,
    eta: b.eta, denoisingStrength: b.denoising_strength, initImages: b.init_images, initImageUrl: b.init_image_url, mask: b.mask,
    model: b.model, requestedIntensity: b.intensity, consentAttestationRef: b.consent_attestation_ref,
    ...(b.hires ? {
      hires: {
        scale: b.hires.scale, resizeX: b.hires.resize_x, resizeY: b.hires.resize_y, upscaler: b.hires.upscaler,
        steps: b.hires.second_pass_steps, denoise: b.hires.denoising_strength,
        prompt: b.hires.prompt || null, negativePrompt: b.hires.negative_prompt || null, sampler: b.hires.sampler_name || null,
      },
    } : {}),
    ...(b.pad_cond_uncond ? { padCondUncond: true } : {}),
  };
}

const jobViewSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    mode: { type: 'string' },
    state: { type: 'string', enum: ['queued', 'running', 'succeeded', 'failed', 'cancelled'] },
    attempts: { type: 'integer' },
    created_at: { type: 'string' },
    started_at: { type: ['string', 'null'] },
    finished_at: { type: ['string', 'null'] },
    progress: { type: 'object', properties: { step: { type: 'integer' }, total: { type: 'integer' } } },
    error: { type: ['string', 'null'] },
    intensity: {
      type: 'object',
      properties: { requested: { type: 'integer' }, effective: { type: 'integer' }, verdict: { type: 'string' }, reason: { type: 'string' } },
    },
    image_count: { type: 'integer' },
    links: { type: 'object', additionalProperties: { type: 'string' } },
  },
} as const;

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export function jobView(ctx: Ctx, job: JobRow) {
  const s = JSON.parse(job.screening_json) as ScreeningResult;
  return {
    id: job.id,
    mode: job.mode,
    state: job.state,
    attempts: job.attempts,
    created_at: iso(job.created_at)!,
    started_at: iso(job.started_at),
    finished_at: iso(job.finished_at),
    progress: { step: job.progress_step, total: job.progress_total },
    error: job.error,
    intensity: { requested: s.requestedIntensity, effective: s.effectiveIntensity, verdict: s.verdict, reason: s.reason },
    image_count: job.state === 'succeeded' ? ctx.store.countJobImages(job.id) : 0,
    links: {
      self: `/api/v1/jobs/${job.id}`,
      events: `/api/v1/jobs/${job.id}/events`,
      result: `/api/v1/jobs/${job.id}/result`,
      cancel: `/api/v1/jobs/${job.id}/cancel`,
    },
  };
}

/** The caller's own job, or any job for an admin; 404 otherwise (no existence leak). */
export function ownedJob(ctx: Ctx, req: FastifyRequest, id: string): JobRow | null {
  const job = ctx.store.getJob(id);
  if (!job) return null;
  const caller = req.caller!;
  if (job.caller === caller.id || ctx.roles.get(caller.role).canAdmin) return job;
  return null;
}

export function replySubmissionError(req: FastifyRequest, reply: FastifyReply, err: unknown): FastifyReply {
  try {
    rethrowAsSubmission(err);
  } catch (e) {
    if (e instanceof SubmissionError) return sendError(req, reply, e.status, e.code, e.message, e.headers, e.requestId);
    throw e;
  }
}

const idParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', maxLength: 64 } } } as const;

export function registerNativeRoutes(app: FastifyInstance, ctx: Ctx): void {
  const { store, components, roles } = ctx;

  app.get('/api/v1/health', {
    config: { public: true },
    schema: {
      tags: ['native'], summary: 'Liveness and what is plugged in (no authentication)',
      response: {
        200: {
          type: 'object',
          properties: {
            status: { type: 'string' }, queue: { type: 'string' }, output_checks: { type: 'boolean' },
            provenance: { type: 'boolean' }, audit: { type: 'boolean' },
          },
        },
      },
    },
  }, async () => ({
    status: 'ok', queue: ctx.jobs.queue.kind, output_checks: components.outputChecker !== null,
    provenance: components.provenance !== null, audit: components.audit !== null,
  }));

  app.post<{ Body: { username: string; password: string } }>('/api/v1/session', {
    config: { public: true },
    schema: {
      tags: ['session'], summary: 'Sign in to the web studio (sets an httpOnly SameSite=Strict cookie)',
      body: { type: 'object', required: ['username', 'password'], additionalProperties: false, properties: { username: { type: 'string', maxLength: 64 }, password: { type: 'string', maxLength: 1024 } } },
      response: {
        200: { type: 'object', properties: { username: { type: 'string' }, role: { type: 'string' }, intensity_cap: { type: 'integer' }, csrf_token: { type: 'string' } } },
        401: errorSchema,
        429: errorSchema,
      },
    },
  }, async (req, reply) => {
    // Password guessing: 10 attempts per user name and per client address, one more every 6 s.
    for (const bucket of [`login-user:${req.body.username}`, `login-ip:${req.ip}`]) {
      const d = ctx.limiter.take(bucket, 1, { capacity: 10, refillPerSecond: 1 / 6 });
      if (!d.allowed) return sendError(req, reply, 429, 'rate_limited', `too many sign-in attempts; retry in ${d.retryAfterS} s`, { ...d.headers, 'Retry-After': String(d.retryAfterS) });
    }
    const r = await store.login(req.body.username, req.body.password);
    if (!r) return sendError(req, reply, 401, 'bad_credentials', 'wrong user name or password');
    reply.setCookie(SESSION_COOKIE, r.token, { httpOnly: true, sameSite: 'strict', secure: req.protocol === 'https', path: '/', maxAge: 12 * 3600 });
    return { username: r.user.username, role: r.user.role, intensity_cap: roles.has(r.user.role) ? roles.get(r.user.role).maxIntensity : 0, csrf_token: r.csrfToken };
  });

  app.delete('/api/v1/session', { schema: { tags: ['session'], summary: 'Sign out' } }, async (req, reply) => {
    const token = req.cookies[SESSION_COOKIE];
    if (token) store.logout(token);
    reply.clearCookie(SESSION_COOKIE, { path: '/' });
    return reply.code(204).send();
  });

  app.get('/api/v1/me', {
    schema: {
      tags: ['native'], summary: 'The caller as the server sees it: identity, role and caps',
      response: { 200: { type: 'object', properties: { caller: { type: 'string' }, role: { type: 'string' }, via: { type: 'string' }, intensity_cap: { type: 'integer' }, can_generate: { type: 'boolean' }, can_admin: { type: 'boolean' }, csrf_token: { type: 'string' } } } },
    },
  }, async (req) => {
    const c = req.caller!;
    const caps = roles.get(c.role);
    return { caller: c.id, role: c.role, via: c.via, intensity_cap: caps.maxIntensity, can_generate: caps.canGenerate, can_admin: caps.canAdmin, ...(c.csrfToken ? { csrf_token: c.csrfToken } : {}) };
  });

  app.post<{ Body: NativeJobBody }>('/api/v1/jobs', {
    schema: {
      tags: ['native'], summary: 'Queue a generation job (txt2img or img2img)',
      body: jobRequestSchema,
      response: { 202: jobViewSchema, 403: errorSchema, 422: errorSchema, 429: errorSchema },
    },
  }, async (req, reply) => {
    try {
      const { job, rate } = await submitGeneration(ctx, req.caller!, nativeToInput(req.body));
      reply.headers(rate.headers);
      reply.header('Location', `/api/v1/jobs/${job.id}`);
      reply.header('X-Request-Id', job.id);
      return reply.code(202).send(jobView(ctx, store.getJob(job.id)!));
    } catch (err) {
      return replySubmissionError(req, reply, err);
    }
  });

  app.get<{ Querystring: { state?: JobState; limit: number } }>('/api/v1/jobs', {
    schema: {
      tags: ['native'], summary: 'The caller\'s jobs, newest first',
      querystring: { type: 'object', properties: { state: { type: 'string', enum: ['queued', 'running', 'succeeded', 'failed', 'cancelled'] }, limit: { type: 'integer', minimum: 1, maximum: 500, default: 50 } } },
      response: { 200: { type: 'object', properties: { jobs: { type: 'array', items: jobViewSchema } } } },
    },
  }, async (req) => {
    const rows = store.listJobs({ caller: req.caller!.id, ...(req.query.state ? { state: req.query.state } : {}), limit: req.query.limit });
    return { jobs: rows.map((j) => jobView(ctx, j)) };
  });

  app.get<{ Params: { id: string } }>('/api/v1/jobs/:id', {
    schema: { tags: ['native'], summary: 'Job status', params: idParams, response: { 200: jobViewSchema, 404: errorSchema } },
  }, async (req, reply) => {
    const job = ownedJob(ctx, req, req.params.id);
    if (!job) return sendError(req, reply, 404, 'unknown_job', 'no such job');
    return jobView(ctx, job);
  });

  app.post<{ Params: { id: string } }>('/api/v1/jobs/:id/cancel', {
    schema: { tags: ['native'], summary: 'Cancel a queued or running job', params: idParams, response: { 202: jobViewSchema, 404: errorSchema } },
  }, async (req, reply) => {
    const job = ownedJob(ctx, req, req.params.id);
    if (!job) return sendError(req, reply, 404, 'unknown_job', 'no such job');
    await ctx.jobs.cancel(job);
    return reply.code(202).send(jobView(ctx, store.getJob(job.id)!));
  });

  app.get<{ Params: { id: string } }>('/api/v1/jobs/:id/result', {
    schema: {
      tags: ['native'], summary: 'Images (base64 PNG), infotext, seeds and provenance status of a finished job',
      params: idParams,
      response: {
        200: {
          type: 'object',
          properties: {
            job: jobViewSchema,
            images: {
              type: 'array',
              items: {
                type: 'object',
                properties: {
                  index: { type: 'integer' }, url: { type: 'string' }, png_base64: { type: 'string' }, infotext: { type: 'string' }, seed: { type: 'integer' },
                  provenance: { type: 'object', properties: { parameters: { type: 'boolean' }, xmp: { type: 'boolean' }, c2pa: { type: 'string' }, watermark: { type: 'boolean' }, status: { type: 'string' } } },
                },
              },
            },
            info: { type: 'object', additionalProperties: true },
          },
        },
        404: errorSchema, 409: errorSchema,
      },
    },
  }, async (req, reply) => {
    const job = ownedJob(ctx, req, req.params.id);
    if (!job) return sendError(req, reply, 404, 'unknown_job', 'no such job');
    if (job.state !== 'succeeded') return sendError(req, reply, 409, 'job_not_finished', `job is ${job.state}${job.error ? `: ${job.error}` : ''}`);
    return {
      job: jobView(ctx, job),
      images: store.jobImages(job.id).map((im) => ({
        index: im.idx,
        url: `/api/v1/jobs/${job.id}/images/${im.idx}`,
        png_base64: im.png.toString('base64'),
        infotext: im.infotext,
        seed: im.seed,
        provenance: im.provenance_json ? { ...JSON.parse(im.provenance_json), status: 'marked' } : { status: 'unmarked: no provenance component installed' },
      })),
      info: job.info_json ? JSON.parse(job.info_json) : {},
    };
  });

  app.get<{ Params: { id: string; idx: number } }>('/api/v1/jobs/:id/images/:idx', {
    schema: {
      tags: ['native'], summary: 'One result image as image/png',
      params: { type: 'object', required: ['id', 'idx'], properties: { id: { type: 'string', maxLength: 64 }, idx: { type: 'integer', minimum: 0 } } },
    },
  }, async (req, reply) => {
    const job = ownedJob(ctx, req, req.params.id);
    const im = job ? store.jobImage(job.id, req.params.idx) : undefined;
    if (!im) return sendError(req, reply, 404, 'unknown_image', 'no such image');
    reply.header('Content-Type', 'image/png');
    reply.header('Content-Disposition', `inline; filename="${job!.id}-${im.idx}.png"`);
    return reply.send(im.png);
  });

  app.get<{ Params: { id: string } }>('/api/v1/jobs/:id/events', {
    schema: { tags: ['native'], summary: 'Server-Sent Events: state, progress (step, total, preview PNG base64) and done', params: idParams },
  }, async (req, reply) => {
    const job = ownedJob(ctx, req, req.params.id);
    if (!job) return sendError(req, reply, 404, 'unknown_job', 'no such job');
    streamJobEvents(ctx.hub, ctx.store, req, reply, job.id);
    return reply;
  });

  app.get('/api/v1/models', {
    schema: { tags: ['native'], summary: 'Checkpoints', response: { 200: { type: 'object', properties: { current: { type: ['string', 'null'] }, models: { type: 'array', items: { type: 'object', additionalProperties: true } } } } } },
  }, async () => ({ current: await components.backend.currentModel(), models: await components.backend.listModels() }));

  app.get('/api/v1/adapters', {
    schema: { tags: ['native'], summary: 'LoRA adapters', response: { 200: { type: 'object', properties: { adapters: { type: 'array', items: { type: 'object', additionalProperties: true } } } } } },
  }, async () => ({ adapters: await components.backend.listLoras() }));

  app.get('/api/v1/samplers', {
    schema: { tags: ['native'], summary: 'Samplers', response: { 200: { type: 'object', properties: { samplers: { type: 'array', items: { type: 'object', additionalProperties: true } } } } } },
  }, async () => ({ samplers: await components.backend.listSamplers() }));
}

function streamJobEvents(hub: ProgressHub, store: ServiceStore, req: FastifyRequest, reply: FastifyReply, jobId: string): void {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    ...securityHeaders,
    'Content-Type': 'text/event-stream; charset=utf-8',
    'Cache-Control': 'no-cache, no-transform',
    Connection: 'keep-alive',
    'X-Accel-Buffering': 'no',
  });
  let closed = false;
  const send = (e: JobEvent) => {
    if (closed) return;
    const { type, ...data } = e;
    res.write(`event: ${type}\ndata: ${JSON.stringify(data)}\n\n`);
    if (type === 'done') end();
  };
  const unsubscribe = hub.subscribe(jobId, send);
  const unShutdown = hub.onShutdown(() => end());
  // Read the state after subscribing, so a job finishing in between is not missed.
  const job = store.getJob(jobId)!;
  const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), 15_000);
  const end = () => {
    if (closed) return;
    closed = true;
    unsubscribe();
    unShutdown();
    clearInterval(heartbeat);
    res.end();
  };
  req.raw.on('close', end);
  // Current state first, so a client that connects late still knows where the job is.
  send({ type: 'state', jobId: job.id, state: job.state });
  const live = hub.progress(job.id);
  if (live) send({ type: 'progress', jobId: job.id, step: live.step, total: live.total, ...(live.preview ? { preview: live.preview } : {}) });
  if (job.state === 'succeeded' || job.state === 'failed' || job.state === 'cancelled') send({ type: 'done', jobId: job.id, state: job.state, error: job.error });
}
