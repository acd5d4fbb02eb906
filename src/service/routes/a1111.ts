import type { FastifyInstance } from 'fastify';
import { sendError } from '../auth.ts';
import type { HiresFields, ScreeningResult } from '../backend.ts';
import { samplerWithScheduler, type StoredRequest } from '../execute.ts';
import type { ProgressHub } from '../progress.ts';
import type { ServiceContext, SubmissionInput } from '../submit.ts';
import { rethrowAsSubmission, SubmissionError, submitGeneration } from '../submit.ts';
import { replySubmissionError } from './native.ts';
import { ServerStoppingError } from '../jobs.ts';
import { checkpointShortTitle } from '../hires-prompts.ts';
import { MAX_SIDE } from '../../pipeline/generate.ts';
import { hiresInfotext, IMAGE_UPSCALERS, LATENT_UPSCALERS, resolveHires } from '../../pipeline/hires.ts';

// AUTOMATIC1111-compatible API (/sdapi/v1). Field names and defaults are A1111's: the
// processing defaults (steps 50, cfg_scale 7, 512x512, seed -1, batch 1, n_iter 1), the
// API model's sampler_index "Euler", and img2img's denoising_strength 0.75. Every request
// takes the same submitGeneration path as the native API.

type Ctx = ServiceContext & { hub: ProgressHub };

const commonProperties = {
  prompt: { type: 'string', maxLength: 8000, default: '' },
  negative_prompt: { type: 'string', maxLength: 8000, default: '' },
  styles: { type: ['array', 'null'], items: { type: 'string' }, default: [] },
  seed: { type: 'integer', minimum: -1, default: -1 },
  subseed: { type: 'integer', minimum: -1, default: -1 },
  subseed_strength: { type: 'number', minimum: 0, maximum: 1, default: 0 },
  seed_resize_from_h: { type: 'integer', default: -1 },
  seed_resize_from_w: { type: 'integer', default: -1 },
  sampler_name: { type: ['string', 'null'], maxLength: 64, default: null },
  sampler_index: { type: ['string', 'null'], maxLength: 64, default: 'Euler' },
  scheduler: { type: ['string', 'null'], maxLength: 64, default: null },
  batch_size: { type: 'integer', minimum: 1, maximum: 64, default: 1 },
  n_iter: { type: 'integer', minimum: 1, maximum: 64, default: 1 },
  steps: { type: 'integer', minimum: 1, maximum: 500, default: 50 },
  cfg_scale: { type: 'number', minimum: 0, maximum: 50, default: 7.0 },
  width: { type: 'integer', minimum: 64, maximum: 4096, default: 512 },
  height: { type: 'integer', minimum: 64, maximum: 4096, default: 512 },
  restore_faces: { type: ['boolean', 'null'], default: null },
  tiling: { type: ['boolean', 'null'], default: null },
  do_not_save_samples: { type: 'boolean', default: false },
  do_not_save_grid: { type: 'boolean', default: false },
  eta: { type: ['number', 'null'], default: null },
  s_min_uncond: { type: ['number', 'null'], default: null },
  s_churn: { type: ['number', 'null'], default: null },
  s_tmax: { type: ['number', 'null'], default: null },
  s_tmin: { type: ['number', 'null'], default: null },
  s_noise: { type: ['number', 'null'], default: null },
  override_settings: { type: ['object', 'null'], additionalProperties: true, default: {} },
  override_settings_restore_afterwards: { type: 'boolean', default: true },
  refiner_checkpoint: { type: ['string', 'null'], default: null },
  script_name: { type: ['string', 'null'], default: null },
  script_args: { type: 'array', default: [] },
  send_images: { type: 'boolean', default: true },
  save_images: { type: 'boolean', default: false },
  alwayson_scripts: { type: 'object', additionalProperties: true, default: {} },
  infotext: { type: ['string', 'null'], default: null },
  intensity: { type: ['integer', 'null'], minimum: 0, maximum: 3, default: null, description: 'Redline extension: requested graded intensity, capped by the caller\'s role' },
} as const;

export const a1111Txt2ImgSchema = {
  type: 'object',
  additionalProperties: true,
  properties: {
    ...commonProperties,
    enable_hr: { type: 'boolean', default: false },
    denoising_strength: { type: ['number', 'null'], minimum: 0, maximum: 1, default: null },
    firstphase_width: { type: 'integer', default: 0 },
    firstphase_height: { type: 'integer', default: 0 },
    hr_scale: { type: 'number', default: 2.0 },
    hr_upscaler: { type: ['string', 'null'], default: null },
    hr_second_pass_steps: { type: 'integer', default: 0 },
    hr_resize_x: { type: 'integer', default: 0 },
    hr_resize_y: { type: 'integer', default: 0 },
    hr_checkpoint_name: { type: ['string', 'null'], maxLength: 512, default: null, description: 'null, "" or "Use same checkpoint": the first pass\'s (the only one Redline runs)' },
    hr_sampler_name: { type: ['string', 'null'], maxLength: 64, default: null, description: 'null, "" or "Use same sampler": the first pass\'s' },
    hr_scheduler: { type: ['string', 'null'], maxLength: 64, default: null, description: 'Automatic or Karras; null, "" or "Use same scheduler": the first pass\'s' },
    hr_prompt: { type: ['string', 'null'], maxLength: 8000, default: '', description: 'empty: the prompt (A1111); screened like the prompt; its <lora:> tags must be the prompt\'s' },
    hr_negative_prompt: { type: ['string', 'null'], maxLength: 8000, default: '', description: 'empty: the negative prompt (A1111)' },
  },
} as const;

export const a1111Img2ImgSchema = {
  type: 'object',
  additionalProperties: true,
  properties: {
    ...commonProperties,
    init_images: { type: ['array', 'null'], maxItems: 4, items: { type: 'string' }, default: null },
    init_image_url: { type: ['string', 'null'], maxLength: 2048, default: null, description: 'Redline extension; off unless the operator enables it' },
    resize_mode: { type: 'integer', default: 0 },
    denoising_strength: { type: 'number', minimum: 0, maximum: 1, default: 0.75 },
    image_cfg_scale: { type: ['number', 'null'], default: null },
    mask: { type: ['string', 'null'], default: null },
    mask_blur: { type: ['integer', 'null'], default: null },
    inpainting_fill: { type: 'integer', default: 0 },
    inpaint_full_res: { type: ['boolean', 'integer'], default: true },
    inpaint_full_res_padding: { type: 'integer', default: 0 },
    inpainting_mask_invert: { type: 'integer', default: 0 },
    initial_noise_multiplier: { type: ['number', 'null'], default: null },
    include_init_images: { type: 'boolean', default: false },
    redline_consent: { type: ['string', 'null'], maxLength: 256, default: null, description: 'Redline extension: consent attestation reference for a photographed face in the init image (A1111 clients leave it out)' },
  },
} as const;

type A1111Body = Record<string, unknown> & {
  prompt: string; negative_prompt: string; seed: number; subseed: number; subseed_strength: number;
  sampler_name: string | null; sampler_index: string | null; scheduler: string | null;
  batch_size: number; n_iter: number; steps: number; cfg_scale: number; width: number; height: number;
  eta: number | null; override_settings: Record<string, unknown> | null; script_name: string | null;
  alwayson_scripts: Record<string, { args?: unknown[] }>; enable_hr?: boolean; denoising_strength: number | null;
  hr_scale?: number; hr_upscaler?: string | null; hr_second_pass_steps?: number; hr_resize_x?: number; hr_resize_y?: number;
  firstphase_width?: number; firstphase_height?: number;
  hr_checkpoint_name?: string | null; hr_sampler_name?: string | null; hr_scheduler?: string | null;
  hr_prompt?: string | null; hr_negative_prompt?: string | null;
  init_images?: string[] | null; init_image_url?: string | null; mask?: string | null; intensity: number | null;
  redline_consent?: string | null;
};

const SUPPORTED_OVERRIDES = new Set(['sd_model_checkpoint', 'CLIP_stop_at_last_layers', 'pad_cond_uncond', 'pad_cond_uncond_v0']);

function a1111ToInput(mode: 'txt2img' | 'img2img', b: A1111Body): SubmissionInput {
  // Features Redline does not implement are refused by name, never silently ignored.
  const { hires, firstPass } = mode === 'txt2img' ? a1111Hires(b) : { hires: null, firstPass: null };
  if (b.script_name) throw new SubmissionError(422, 'unsupported', `scripts are not supported by Redline (script_name '${b.script_name}').`);
  for (const [name, s] of Object.entries(b.alwayson_scripts ?? {})) {
    if (Array.isArray(s?.args) && s.args.length > 0 && s.args.some((a) => a !== false)) {
      throw new SubmissionError(422, 'unsupported', `alwayson script '${name}' is not available on Redline.`);
    }
  }
  const overrides = b.override_settings ?? {};
  for (const key of Object.keys(overrides)) {
    if (!SUPPORTED_OVERRIDES.has(key)) {
      throw new SubmissionError(422, 'unsupported_override', `override_settings.${key} is not supported; supported: ${[...SUPPORTED_OVERRIDES].join(', ')}.`);
    }
  }
  const model = typeof overrides.sd_model_checkpoint === 'string' ? overrides.sd_model_checkpoint : null;
  const clipSkip = typeof overrides.CLIP_stop_at_last_layers === 'number' ? overrides.CLIP_stop_at_last_layers : 1;
  for (const key of ['pad_cond_uncond', 'pad_cond_uncond_v0'] as const) {
    if (key in overrides && typeof overrides[key] !== 'boolean') throw new SubmissionError(422, 'bad_override', `override_settings.${key} must be true or false.`);
  }
  if (b.scheduler && !SCHEDULERS.includes(b.scheduler)) {
    // A1111 1.9+ schedulers other than these would silently become the sampler's own
    throw new SubmissionError(422, 'unknown_scheduler', `scheduler '${b.scheduler}' is not available on Redline; schedulers: ${SCHEDULERS.join(', ')} (Karras applies to samplers with a Karras variant, e.g. "DPM++ 2M").`);
  }
  if (overrides.pad_cond_uncond_v0 === true) {
    throw new SubmissionError(422, 'unsupported_override', 'override_settings.pad_cond_uncond_v0 (A1111\'s pre-1.6 DDIM padding, which can truncate the negative prompt) is not implemented; pad_cond_uncond is.');
  }
  return {
    mode,
    prompt: b.prompt,
    negativePrompt: b.negative_prompt,
    adapters: [],
    sampler: b.sampler_name || b.sampler_index || 'Euler',
    scheduler: b.scheduler || 'Automatic',
    steps: b.steps,
    cfgScale: b.cfg_scale,
    seed: b.seed,
    subseed: b.subseed,
    subseedStrength: b.subseed_strength,
    width: firstPass?.width ?? b.width,
    height: firstPass?.height ?? b.height,
    batchSize: b.batch_size,
    nIter: b.n_iter,
    clipSkip,
    eta: b.eta,
    denoisingStrength: b.denoising_strength,
    initImages: b.init_images ?? [],
    initImageUrl: b.init_image_url ?? null,
    mask: b.mask ?? null,
    model,
    requestedIntensity: b.intensity,
    consentAttestationRef: b.redline_consent ?? null,
    ...(hires ? { hires } : {}),
    ...(overrides.pad_cond_uncond === true ? { padCondUncond: true } : {}),
  };
}

/** What A1111's UI and clients send for "the first pass's" in a hires field. */
const sameAsFirst = (v: string | null | undefined, marker: string): boolean => v === undefined || v === null || v.trim() === '' || v === marker;

/**
 * A1111's txt2img hires fields (StableDiffusionProcessingTxt2Img, 1.10); its defaults where
 * left out. Empty hires prompts and the "Use same ..." values are the first pass's. The
 * hires sampler folds in hr_scheduler (else the first pass's scheduler, as A1111 inherits
 * it) the way the first pass's sampler and scheduler fold into a Redline sampler name.
 */
function a1111Hires(b: A1111Body): { hires: HiresFields | null; firstPass: { width: number; height: number } | null } {
  const fw = b.firstphase_width ?? 0;
  const fh = b.firstphase_height ?? 0;
  // A1111 (StableDiffusionProcessingTxt2Img.__post_init__, 1.x) makes firstphase_* the
  // first pass's size whenever one is set, enable_hr or not: without the hires fix the
  // image is made at firstphase_width x firstphase_height and width/height go unused.
  const firstPass = fw || fh ? { width: fw, height: fh } : null;
  if (firstPass && (!fw || !fh)) {
    // A1111 would then run with a side of 0 and fail; a 422 says why instead.
    throw new SubmissionError(422, 'bad_hires', `firstphase_width/firstphase_height must both be set (got ${fw}x${fh}); or leave both 0 and set width/height to the first pass.`);
  }
  if (!b.enable_hr) return { hires: null, firstPass };
  const hires: HiresFields = {
    scale: b.hr_scale ?? 2,
    resizeX: b.hr_resize_x ?? 0,
    resizeY: b.hr_resize_y ?? 0,
    upscaler: b.hr_upscaler ?? null,
    steps: b.hr_second_pass_steps ?? 0,
    // A1111's StableDiffusionProcessingTxt2Img default.
    denoise: b.denoising_strength ?? 0.75,
    prompt: b.hr_prompt || null,
    negativePrompt: b.hr_negative_prompt || null,
    sampler: a1111HiresSampler(b),
    checkpoint: sameAsFirst(b.hr_checkpoint_name, 'Use same checkpoint') ? null : b.hr_checkpoint_name!,
  };
  if (firstPass) {
    // A1111 1.6+ computes the target from hr_scale / hr_resize_* and the first pass, and
    // no longer from width/height: a request meaning the old rule must agree with it.
    let target;
    try {
      target = resolveHires(hires, { width: fw, height: fh, steps: b.steps }, MAX_SIDE);
    } catch (err) {
      rethrowAsSubmission(err);
    }
    if (target.width !== b.width || target.height !== b.height) {
      throw new SubmissionError(422, 'bad_hires',
        `firstphase ${fw}x${fh} with ${hires.resizeX || hires.resizeY ? `hr_resize ${hires.resizeX}x${hires.resizeY}` : `hr_scale ${hires.scale}`} gives ${target.width}x${target.height}, but width/height ask for ${b.width}x${b.height} (A1111 would ignore them). ` +
        'Set width/height to the first pass and hr_scale or hr_resize_x/hr_resize_y to the target.');
    }
  }
  return { hires, firstPass };
}

const SCHEDULERS = ['Automatic', 'Karras'];

function a1111HiresSampler(b: A1111Body): string | null {
  const sameSampler = sameAsFirst(b.hr_sampler_name, 'Use same sampler');
  const sameScheduler = sameAsFirst(b.hr_scheduler, 'Use same scheduler');
  if (sameSampler && sameScheduler) return null;
  if (!sameScheduler && !SCHEDULERS.includes(b.hr_scheduler!)) {
    throw new SubmissionError(422, 'unknown_scheduler', `hr_scheduler '${b.hr_scheduler}' is not available on Redline; schedulers: ${SCHEDULERS.join(', ')} (or "Use same scheduler").`);
  }
  const name = sameSampler ? (b.sampler_name || b.sampler_index || 'Euler') : b.hr_sampler_name!;
  const scheduler = sameScheduler ? (b.scheduler || 'Automatic') : b.hr_scheduler!;
  return samplerWithScheduler(name, scheduler);
}

/** The hires entries A1111 puts in extra_generation_params, as its init() names them (the infotext's, src/pipeline/hires.ts). */
function a1111HiresParams(request: StoredRequest, checkpointTitle: string | undefined): Record<string, unknown> {
  if (!request.hires) return {};
  const sampler = samplerWithScheduler(request.sampler, request.scheduler);
  const resolved = resolveHires(request.hires, { width: request.width, height: request.height, steps: request.steps }, MAX_SIDE);
  const { hires: hr, denoisingStrength } = hiresInfotext(resolved, { prompt: request.prompt, negativePrompt: request.negativePrompt, sampler });
  const entries: [string, unknown][] = [
    ['Denoising strength', denoisingStrength],
    ['Hires checkpoint', request.hires.checkpoint ? (checkpointTitle ?? request.hires.checkpoint) : undefined],
    ['Hires sampler', hr.sampler],
    ['Hires prompt', hr.prompt],
    ['Hires negative prompt', hr.negativePrompt],
    ['Hires schedule type', hr.scheduleType],
    ['Hires upscale', hr.upscale],
    ['Hires resize', hr.resize ? `${hr.resize.x}x${hr.resize.y}` : undefined],
    ['Hires steps', hr.steps],
    ['Hires upscaler', hr.upscaler],
  ];
  return Object.fromEntries(entries.filter(([, v]) => v !== undefined));
}

function timestamp(ms: number): string {
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

const responseSchema = {
  type: 'object',
  properties: {
    images: { type: 'array', items: { type: 'string' }, description: 'base64 PNG' },
    parameters: { type: 'object', additionalProperties: true },
    info: { type: 'string', description: 'JSON string, as A1111' },
  },
} as const;

const a1111Error = {
  type: 'object',
  properties: { error: { type: 'string' }, detail: { type: 'string' }, body: { type: 'string' }, errors: { type: 'string' }, request_id: { type: 'string' } },
} as const;

export function registerA1111Routes(app: FastifyInstance, ctx: Ctx): void {
  const { store, components, roles, hub } = ctx;

  for (const mode of ['txt2img', 'img2img'] as const) {
    app.post<{ Body: A1111Body }>(`/sdapi/v1/${mode}`, {
      schema: {
        tags: ['a1111'], summary: `A1111 ${mode}: waits for the job and answers {images, parameters, info}`,
        body: mode === 'txt2img' ? a1111Txt2ImgSchema : a1111Img2ImgSchema,
        response: { 200: responseSchema, 403: a1111Error, 422: a1111Error, 429: a1111Error },
      },
    }, async (req, reply) => {
      let submitted;
      try {
        submitted = await submitGeneration(ctx, req.caller!, a1111ToInput(mode, req.body));
      } catch (err) {
        return replySubmissionError(req, reply, err);
      }
      reply.headers(submitted.rate.headers);
      // The job id is the request's id in the audit log (its screening and generation rows).
      const requestId = submitted.job.id;
      reply.header('X-Request-Id', requestId);
      // The client hanging up does not cancel: A1111 behaves the same, and /progress and
      // the native job API still show the job.
      let job;
      try {
        job = await ctx.jobs.waitFor(submitted.job.id);
      } catch (err) {
        if (err instanceof ServerStoppingError) return sendError(req, reply, 503, 'server_stopping', `${err.message} (job ${submitted.job.id})`, {}, requestId);
        throw err;
      }
      const info = job.info_json ? (JSON.parse(job.info_json) as Record<string, unknown>) : {};
      if (job.state !== 'succeeded') {
        const refused = info.refused === true;
        return sendError(req, reply, refused ? 403 : job.state === 'cancelled' ? 409 : 500, refused ? 'refused' : `job_${job.state}`, job.error ?? `job ${job.state}`, {}, requestId);
      }
      const images = store.jobImages(job.id);
      const blocked = (info.blocked as { reason: string }[] | undefined) ?? [];
      if (images.length === 0 && blocked.length > 0) {
        return sendError(req, reply, 403, 'output_blocked', blocked.map((b) => b.reason).join('; '), {}, requestId);
      }
      const request = JSON.parse(job.request_json) as StoredRequest;
      const screening = JSON.parse(job.screening_json) as ScreeningResult;
      const parameters: Record<string, unknown> = { ...req.body, seed: request.seed, subseed: request.subseed };
      if (mode === 'img2img' && !req.body.include_init_images) {
        parameters.init_images = null;
        parameters.mask = null;
      }
      const seeds = images.map((im) => im.seed);
      const prompts = images.map(() => req.body.prompt);
      const model = (await components.backend.listModels()).find((m) => m.title === request.model || m.model_name === request.model);
      const infoObj = {
        prompt: req.body.prompt,
        all_prompts: prompts,
        negative_prompt: req.body.negative_prompt,
        all_negative_prompts: images.map(() => req.body.negative_prompt),
        seed: request.seed,
        all_seeds: seeds,
        subseed: request.subseed,
        all_subseeds: images.map((_, i) => request.subseed + i),
        subseed_strength: request.subseedStrength,
        width: request.width,
        height: request.height,
        sampler_name: request.sampler,
        cfg_scale: request.cfgScale,
        steps: request.steps,
        batch_size: request.batchSize,
        restore_faces: false,
        face_restoration_model: null,
        sd_model_name: model?.model_name ?? request.model,
        sd_model_hash: model?.hash ?? null,
        sd_vae_name: null,
        sd_vae_hash: null,
        seed_resize_from_w: -1,
        seed_resize_from_h: -1,
        denoising_strength: request.hires ? request.hires.denoise : request.denoisingStrength,
        extra_generation_params: {
          ...a1111HiresParams(request, model ? checkpointShortTitle(model) : undefined),
          // A1111's sampler sets p.extra_generation_params["Pad conds"] = True when
          // pad_cond_uncond padded a denoiser call in any pass, as the infotext says.
          ...(info.padConds === true ? { 'Pad conds': true } : {}),
          'Redline intensity': request.intensity,
        },
        index_of_first_image: 0,
        infotexts: images.map((im) => im.infotext),
        styles: [],
        job_timestamp: timestamp(job.created_at),
        clip_skip: request.clipSkip,
        is_using_inpainting_conditioning: false,
        version: 'redline',
        redline: {
          job_id: job.id,
          intensity: { requested: screening.requestedIntensity, effective: screening.effectiveIntensity, verdict: screening.verdict, reason: screening.reason },
          blocked_images: blocked,
          provenance: images.map((im) => (im.provenance_json ? JSON.parse(im.provenance_json) : null)),
        },
      };
      return { images: images.map((im) => im.png.toString('base64')), parameters, info: JSON.stringify(infoObj) };
    });
  }

  app.get('/sdapi/v1/sd-models', {
    schema: { tags: ['a1111'], summary: 'Checkpoints (A1111 shape)', response: { 200: { type: 'array', items: { type: 'object', properties: { title: { type: 'string' }, model_name: { type: 'string' }, hash: { type: ['string', 'null'] }, sha256: { type: ['string', 'null'] }, filename: { type: 'string' }, config: { type: ['string', 'null'] } } } } } },
  }, async () => (await components.backend.listModels()).map((m) => ({ ...m, config: null })));

  app.get('/sdapi/v1/loras', {
    schema: { tags: ['a1111'], summary: 'LoRA adapters (A1111 Lora extension shape)', response: { 200: { type: 'array', items: { type: 'object', properties: { name: { type: 'string' }, alias: { type: 'string' }, path: { type: 'string' }, metadata: { type: 'object', additionalProperties: true } } } } } },
  }, async () => components.backend.listLoras());

  app.get('/sdapi/v1/samplers', {
    schema: { tags: ['a1111'], summary: 'Samplers (A1111 shape)', response: { 200: { type: 'array', items: { type: 'object', properties: { name: { type: 'string' }, aliases: { type: 'array', items: { type: 'string' } }, options: { type: 'object', additionalProperties: true } } } } } },
  }, async () => components.backend.listSamplers());

  // The hires fix's upscalers, as A1111 lists them (its built-in pixel upscalers report scale 4).
  app.get('/sdapi/v1/upscalers', {
    schema: { tags: ['a1111'], summary: 'Pixel upscalers for hr_upscaler (A1111 shape; no model upscalers on Redline)', response: { 200: { type: 'array', items: { type: 'object', properties: { name: { type: 'string' }, model_name: { type: ['string', 'null'] }, model_path: { type: ['string', 'null'] }, model_url: { type: ['string', 'null'] }, scale: { type: 'number' } } } } } },
  }, async () => Object.keys(IMAGE_UPSCALERS).map((name) => ({ name, model_name: null, model_path: null, model_url: null, scale: 4 })));

  app.get('/sdapi/v1/latent-upscale-modes', {
    schema: { tags: ['a1111'], summary: 'Latent upscale modes for hr_upscaler (A1111 shape)', response: { 200: { type: 'array', items: { type: 'object', properties: { name: { type: 'string' } } } } } },
  }, async () => Object.keys(LATENT_UPSCALERS).map((name) => ({ name })));

  app.get('/sdapi/v1/scripts', {
    schema: { tags: ['a1111'], summary: 'Scripts (none on Redline)', response: { 200: { type: 'object', properties: { txt2img: { type: 'array', items: { type: 'string' } }, img2img: { type: 'array', items: { type: 'string' } } } } } },
  }, async () => ({ txt2img: [], img2img: [] }));

  app.get<{ Querystring: { skip_current_image: boolean } }>('/sdapi/v1/progress', {
    schema: {
      tags: ['a1111'], summary: 'Progress of the caller\'s running job (A1111 shape)',
      querystring: { type: 'object', properties: { skip_current_image: { type: 'boolean', default: false } } },
      response: {
        200: {
          type: 'object',
          properties: {
            progress: { type: 'number' }, eta_relative: { type: 'number' },
            state: { type: 'object', additionalProperties: true },
            current_image: { type: ['string', 'null'] }, textinfo: { type: ['string', 'null'] }, current_task: { type: ['string', 'null'] },
          },
        },
      },
    },
  }, async (req) => {
    const caller = req.caller!.id;
    const running = store.listJobs({ caller, state: 'running', limit: 1 })[0];
    const queued = store.listJobs({ caller, state: 'queued', limit: 500 }).length;
    const live = running ? hub.progress(running.id) : undefined;
    const step = live?.step ?? running?.progress_step ?? 0;
    const total = live?.total || running?.progress_total || 0;
    const progress = total > 0 ? step / total : 0;
    const elapsed = live ? (Date.now() - live.startedMs) / 1000 : 0;
    return {
      progress,
      eta_relative: progress > 0 ? elapsed / progress - elapsed : 0,
      state: {
        skipped: false, interrupted: false, stopping_generation: false,
        job: running ? running.id : '', job_count: (running ? 1 : 0) + queued,
        job_timestamp: running ? timestamp(running.created_at) : '0', job_no: 0,
        sampling_step: step, sampling_steps: total,
      },
      current_image: req.query.skip_current_image ? null : live?.preview ?? null,
      textinfo: null,
      current_task: running?.id ?? null,
    };
  });

  app.post('/sdapi/v1/interrupt', { schema: { tags: ['a1111'], summary: 'Cancel the caller\'s running job' } }, async (req) => {
    const running = store.listJobs({ caller: req.caller!.id, state: 'running', limit: 10 });
    for (const job of running) await ctx.jobs.cancel(job);
    return {};
  });

  app.get('/sdapi/v1/options', {
    schema: { tags: ['a1111'], summary: 'Settings (read): the loaded checkpoint and fixed output settings', response: { 200: { type: 'object', additionalProperties: true } } },
  }, async () => ({
    sd_model_checkpoint: await components.backend.currentModel(),
    CLIP_stop_at_last_layers: 1,
    samples_format: 'png',
    enable_pnginfo: true,
  }));

  app.post<{ Body: Record<string, unknown> }>('/sdapi/v1/options', {
    schema: {
      tags: ['a1111'], summary: 'Switch the loaded checkpoint (sd_model_checkpoint); other settings are fixed by the operator',
      body: { type: 'object', additionalProperties: true, properties: { sd_model_checkpoint: { type: 'string', maxLength: 512 } } },
      response: { 403: a1111Error, 422: a1111Error },
    },
  }, async (req, reply) => {
    if (!roles.get(req.caller!.role).canSwitchModel) {
      return sendError(req, reply, 403, 'forbidden', `role '${req.caller!.role}' may not change the loaded checkpoint`);
    }
    const unsupported = Object.keys(req.body).filter((k) => k !== 'sd_model_checkpoint');
    if (unsupported.length) return sendError(req, reply, 422, 'unsupported_option', `options ${unsupported.join(', ')} cannot be set over the API on Redline`);
    const name = req.body.sd_model_checkpoint;
    if (typeof name === 'string') {
      const models = await components.backend.listModels();
      if (!models.some((m) => m.title === name || m.model_name === name)) {
        return sendError(req, reply, 422, 'unknown_model', `model '${name}' not found; see /sdapi/v1/sd-models`);
      }
      await components.backend.switchModel(name);
      void components.audit?.record({ kind: 'admin', caller: req.caller!.id, role: req.caller!.role, detail: { action: 'switch_model', model: name } });
    }
    return null;
  });
}
