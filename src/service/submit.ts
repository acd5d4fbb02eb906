import { randomInt, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { RedlineError } from '../errors.ts';
import { MAX_SIDE } from '../pipeline/generate.ts';
import { resolveHires, type ResolvedHires } from '../pipeline/hires.ts';
import { assertAdapterGradable } from '../safety/graded.ts';
import { currentSidecar } from './adapter-files.ts';
import type { AdapterInfo, AdapterUse, GenerationFields, RoleCaps, ScreeningResult, ServiceComponents } from './backend.ts';
import type { StoredRequest } from './execute.ts';
import { decodeBase64Image, fetchInitImage, normaliseUpload, type UploadLimits } from './hardening.ts';
import type { JobService } from './jobs.ts';
import type { ServiceMetrics } from './metrics.ts';
import { checkHiresCheckpoint, hiresWithoutLoraTags, screenWithHires } from './hires-prompts.ts';
import { generationCost, type RateDecision, type RateLimiter } from './ratelimit.ts';
import type { RoleTable } from './roles.ts';
import type { Caller, JobRow, ServiceStore } from './store.ts';

/** A generation request after the interface (native or A1111) mapped its fields. */
export interface SubmissionInput extends GenerationFields<string> {
  /** img2img: an init image fetched by the server (only when the operator allows it). */
  initImageUrl: string | null;
  /** What the request asked for; only a wish, capped by the caller's role. */
  requestedIntensity: number | null;
  /**
   * img2img only: the reference of the pictured person's signed consent. It only matters
   * when the caller's role has the policy's consent workflow; it is kept in the audit log.
   */
  consentAttestationRef: string | null;
}

export interface ServiceContext {
  store: ServiceStore;
  components: ServiceComponents;
  roles: RoleTable;
  jobs: JobService;
  metrics: ServiceMetrics;
  limiter: RateLimiter;
  uploadLimits: UploadLimits;
  allowInitImageUrls: boolean;
}

/** HTTP status + machine code for a refusal the interface turns into its own error body. */
export class SubmissionError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
    /** Set where the audit log has rows for the request (a screening refusal): the caller
     * gets it back (X-Request-Id, `request_id`) to quote, operators search the log by it. */
    readonly requestId?: string,
  ) {
    super(message);
  }
}

const LORA_TAG = /<lora:([^:>]+)(?::([+-]?\d*\.?\d+))?(?::[^>]*)?>/gi;

/** Pulls A1111 `<lora:name:weight>` tags out of a prompt. */
export function extractLoraTags(prompt: string): { prompt: string; adapters: AdapterUse[] } {
  const adapters: AdapterUse[] = [];
  const stripped = prompt.replace(LORA_TAG, (_m, name: string, weight?: string) => {
    adapters.push({ name: name.trim(), weight: weight === undefined ? 1 : Number(weight) });
    return '';
  });
  return { prompt: stripped.replace(/\s{2,}/g, ' ').replace(/\s+,/g, ',').trim(), adapters };
}

function randomSeed(): number {
  // A1111 draws from randrange(4294967294).
  return randomInt(4294967294);
}

/** The hires fix's checked target, or null; bad settings are a 422 naming the problem (and listing the upscalers). */
function hiresTarget(input: SubmissionInput): ResolvedHires | null {
  if (!input.hires) return null;
  if (input.mode !== 'txt2img') throw new SubmissionError(422, 'hires_txt2img_only', 'the hires fix applies to txt2img only.');
  try {
    return resolveHires(input.hires, { width: input.width, height: input.height, steps: input.steps }, MAX_SIDE);
  } catch (err) {
    if (err instanceof RedlineError) throw new SubmissionError(422, err.code, err.hint ? `${err.message} ${err.hint}` : err.message);
    throw err;
  }
}

function enforceRoleLimits(input: SubmissionInput, role: RoleCaps, hires: ResolvedHires | null): void {
  if (!role.canGenerate) throw new SubmissionError(403, 'role_cannot_generate', `role '${role.name}' may not generate images.`);
  if (input.width % 8 !== 0 || input.height % 8 !== 0) {
    throw new SubmissionError(422, 'bad_size', `width and height must be multiples of 8 (got ${input.width}x${input.height}).`);
  }
  if (input.width * input.height > role.maxPixels) {
    throw new SubmissionError(403, 'size_over_role_limit', `${input.width}x${input.height} is over the ${role.maxPixels}-pixel limit of role '${role.name}'.`);
  }
  if (input.batchSize * input.nIter > role.maxImages) {
    throw new SubmissionError(403, 'batch_over_role_limit', `batch_size x n_iter = ${input.batchSize * input.nIter} is over the limit of ${role.maxImages} images for role '${role.name}'.`);
  }
  if (input.steps > role.maxSteps) {
    throw new SubmissionError(403, 'steps_over_role_limit', `${input.steps} steps is over the limit of ${role.maxSteps} for role '${role.name}'.`);
  }
  // The hires fix's output is the image the request makes: the size limit applies to it.
  if (hires && hires.width * hires.height > role.maxPixels) {
    throw new SubmissionError(403, 'size_over_role_limit', `the hires fix's ${hires.width}x${hires.height} is over the ${role.maxPixels}-pixel limit of role '${role.name}'.`);
  }
  if (hires && hires.steps > role.maxSteps) {
    throw new SubmissionError(403, 'steps_over_role_limit', `${hires.steps} hires steps is over the limit of ${role.maxSteps} for role '${role.name}'.`);
  }
}

async function checkNames(ctx: ServiceContext, input: SubmissionInput): Promise<void> {
  const samplers = await ctx.components.backend.listSamplers();
  const known = samplers.some((s) => s.name === input.sampler || s.aliases.includes(input.sampler));
  if (!known) {
    throw new SubmissionError(422, 'unknown_sampler', `sampler '${input.sampler}' not found; samplers: ${samplers.map((s) => s.name).join(', ')}.`);
  }
  if (input.model !== null) {
    const models = await ctx.components.backend.listModels();
    if (!models.some((m) => m.title === input.model || m.model_name === input.model)) {
      throw new SubmissionError(422, 'unknown_model', `model '${input.model}' not found; see /sdapi/v1/sd-models.`);
    }
  }
  if (input.adapters.length) {
    const loras = await ctx.components.backend.listLoras();
    for (const a of input.adapters) {
      const info = loras.find((l) => l.name === a.name || l.alias === a.name);
      if (!info) {
        throw new SubmissionError(422, 'unknown_adapter', `adapter '${a.name}' not found; see /sdapi/v1/loras.`);
      }
      if (!Number.isFinite(a.weight) || Math.abs(a.weight) > 4) {
        throw new SubmissionError(422, 'bad_adapter_weight', `adapter '${a.name}' weight ${a.weight} is outside -4..4.`);
      }
      assertAdapterAccepted(info);
    }
  }
}

/**
 * An adapter the job would be refused for (a broken sidecar, an unknown or hard-blocked
 * category, a graded calibration the policy cannot use, a declared category without its
 * sidecar) is refused now, as a 422 with the reason, rather than queued to fail when it runs.
 * The backend's listing says what it found at startup; the sidecar is read again here, since
 * it may have been broken or removed since. Adapters whose file is not on this machine (a
 * backend that lists another machine's folder) are checked where the job runs.
 */
function assertAdapterAccepted(info: AdapterInfo): void {
  const folder = dirname(info.path);
  // Registry messages name files by their base name; this keeps any path a message might
  // still carry (an OS error's text) away from callers.
  const scrub = (text: string): string => (folder.length > 1 ? text.split(info.path).join(basename(info.path)).split(folder).join('<loras>') : text);
  const listed = info.metadata.redline_refused;
  if (typeof listed === 'string') throw new SubmissionError(422, 'adapter_refused', scrub(listed));
  if (!info.path || !existsSync(info.path)) return;
  try {
    assertAdapterGradable(info.name, currentSidecar(info.path, info.name, info.metadata.redline !== undefined));
  } catch (err) {
    if (err instanceof RedlineError) throw new SubmissionError(422, err.code, scrub(err.hint ? `${err.message} ${err.hint}` : err.message));
    throw err;
  }
}

/** A screening row's `detail.screened` for the hires runs (the first pass's row has none). */
const SCREENED_TEXTS = { hires: 'hires prompts', both: 'prompts and hires prompts' } as const;

export interface Submitted {
  job: JobRow;
  screening: ScreeningResult;
  rate: RateDecision;
}

/**
 * The one path every generation request takes, whatever interface it came through:
 * role limits, names, uploads, rate limit, screening (with the caller's server-side role
 * and cap), then the queue.
 */
export async function submitGeneration(ctx: ServiceContext, caller: Caller, raw: SubmissionInput): Promise<Submitted> {
  // One id from the first audit row on: the screening rows carry it, and the job (if the
  // request becomes one) takes it as its id, so screening and generation rows share it.
  const requestId = randomUUID();
  const role = ctx.roles.get(caller.role);
  const tags = extractLoraTags(raw.prompt);
  const input: SubmissionInput = {
    ...raw, prompt: tags.prompt, adapters: [...raw.adapters, ...tags.adapters],
    ...(raw.hires ? { hires: hiresWithoutLoraTags(raw.prompt, raw.negativePrompt, raw.hires) } : {}),
  };
  const hires = hiresTarget(input);
  enforceRoleLimits(input, role, hires);
  await checkNames(ctx, input);
  if (input.hires) await checkHiresCheckpoint(ctx.components.backend, input.model, input.hires);
  const consentRef = input.consentAttestationRef?.trim() || null;
  if (consentRef !== null && input.mode !== 'img2img') {
    throw new SubmissionError(422, 'consent_not_applicable', 'a consent attestation reference applies to img2img init images only; remove it from this txt2img request.');
  }

  const initImages: Buffer[] = [];
  if (input.mode === 'img2img') {
    const sources = input.initImages.map((b64, i) => ({ field: `init_images[${i}]`, bytes: decodeBase64Image(b64, `init_images[${i}]`, ctx.uploadLimits) }));
    if (input.initImageUrl !== null) {
      if (!ctx.allowInitImageUrls) {
        throw new SubmissionError(403, 'init_url_disabled', 'init images by URL are disabled on this server; send the image as base64.');
      }
      sources.push({ field: 'init_image_url', bytes: await fetchInitImage(input.initImageUrl, ctx.uploadLimits) });
    }
    if (sources.length === 0) throw new SubmissionError(422, 'missing_init_image', 'img2img needs init_images (base64) or init_image_url.');
    if (sources.length > 4) throw new SubmissionError(422, 'too_many_init_images', 'at most 4 init images per request.');
    for (const s of sources) initImages.push(await normaliseUpload(s.bytes, s.field, ctx.uploadLimits));
  }
  const mask = input.mask === null ? null : await normaliseUpload(decodeBase64Image(input.mask, 'mask', ctx.uploadLimits), 'mask', ctx.uploadLimits);

  // A hires fix costs its second pass too, at the target size.
  const cost = generationCost(input) + (hires ? generationCost({ ...input, steps: hires.steps, width: hires.width, height: hires.height }) : 0);
  const rate = ctx.limiter.take(caller.id, cost, role.rate);
  if (!rate.allowed) {
    ctx.metrics.rateLimited.inc({ role: role.name });
    const retry = Number.isFinite(rate.retryAfterS) ? rate.retryAfterS : 3600;
    throw new SubmissionError(429, 'rate_limited', `rate limit reached for this key; retry in ${retry} s.`, { ...rate.headers, 'Retry-After': String(retry) });
  }

  // A hires pass's own prompts are screened too (alone and with the prompts): it renders them.
  const { result: screening, runs } = await screenWithHires(ctx.components.screener, {
    prompt: input.prompt,
    negativePrompt: input.negativePrompt,
    adapters: input.adapters.map((a) => a.name),
    requestedIntensity: input.requestedIntensity,
    role: role.name,
    roleCap: role.maxIntensity,
  }, hires ? { prompt: input.hires?.prompt || input.prompt, negativePrompt: input.hires?.negativePrompt || input.negativePrompt } : null);
  // Defence in depth: whatever the screener says, the role's cap bounds the intensity.
  const effective = Math.max(0, Math.min(screening.effectiveIntensity, role.maxIntensity));
  const verdict: ScreeningResult = { ...screening, effectiveIntensity: effective };
  ctx.metrics.intensity.inc({ requested: String(screening.requestedIntensity), effective: String(effective), verdict: verdict.verdict });
  // One row per screening, each with the texts its evidence offsets index.
  for (const { pass, prompt, negativePrompt, result: r } of runs) {
    const detail = {
      ...(consentRef !== null ? { consentAttestationRef: consentRef } : {}),
      ...(pass !== 'first' ? { screened: SCREENED_TEXTS[pass] } : {}),
    };
    void ctx.components.audit?.record({
      kind: 'screening', caller: caller.id, role: role.name, requestId, prompt, negativePrompt,
      verdict: r.verdict, categories: r.categories, requestedIntensity: r.requestedIntensity,
      effectiveIntensity: Math.max(0, Math.min(r.effectiveIntensity, role.maxIntensity)), reason: r.reason,
      ...(Object.keys(detail).length ? { detail } : {}),
    });
  }
  if (verdict.verdict === 'refuse') {
    const categories = verdict.categories.map((c) => c.category);
    ctx.store.recordBlock({ caller: caller.id, role: role.name, stage: 'prompt', categories, reason: verdict.reason });
    for (const category of categories.length ? categories : ['unspecified']) {
      ctx.metrics.blocks.inc({ stage: 'prompt', category, reason: 'refused' });
    }
    throw new SubmissionError(403, 'refused', verdict.reason, rate.headers, requestId);
  }

  // The request's own wishes (URL, intensity, consent text) stay behind: the job carries
  // what the service decided from them.
  const { initImageUrl: _url, requestedIntensity: _wish, consentAttestationRef: _ref, ...fields } = input;
  const request: StoredRequest = {
    ...fields,
    seed: input.seed === -1 ? randomSeed() : input.seed,
    subseed: input.subseed === -1 ? randomSeed() : input.subseed,
    denoisingStrength: input.mode === 'img2img' ? (input.denoisingStrength ?? 0.75) : input.denoisingStrength,
    initImages: initImages.map((b) => b.toString('base64')),
    mask: mask === null ? null : mask.toString('base64'),
    // Stamped now, so a later model switch does not change what a queued job runs on.
    model: input.model ?? (await ctx.components.backend.currentModel()),
    intensity: effective,
    consentAttestation: consentRef === null ? null : { ref: consentRef, caller: caller.id },
  };
  const job = ctx.store.insertJob({ id: requestId, caller: caller.id, role: role.name, mode: input.mode, request, screening: verdict });
  await ctx.jobs.submit(job);
  return { job, screening: verdict, rate };
}

export function rethrowAsSubmission(err: unknown): never {
  if (err instanceof SubmissionError) throw err;
  if (err instanceof RedlineError) {
    const status = /too_large|too_many_pixels/.test(err.code) ? 413 : err.code.startsWith('init_url_private') ? 403 : 422;
    throw new SubmissionError(status, err.code, err.message);
  }
  throw err;
}
