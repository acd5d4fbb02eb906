// The seam between the HTTP service and the layers below it. The service only ever talks
// to these interfaces; the generation pipeline (src/pipeline) and the safety layers
// (src/safety) provide the implementations, wired in one place: src/service/components.ts
// (see src/service/README.md for how to plug them in).
import type { Policy } from '../safety/policy/policy.ts';
import type { AuditEvidence } from '../safety/audit/audit-log.ts';
import type { CategoryResult } from '../safety/screen/screener.ts';

/** A LoRA (or other adapter) applied to one generation, as A1111's `<lora:name:weight>`. */
export interface AdapterUse {
  name: string;
  /** Strength asked for by the user; the pipeline scales it by the effective intensity. */
  weight: number;
}

/**
 * The fields of one generation request, the same at every stage of the request path: the
 * interface's mapped body (SubmissionInput), the queued job (StoredRequest) and what the
 * pipeline receives (GenerationRequest). Field names follow A1111. `Image` is how the init
 * images and the mask travel at that stage: base64 text over HTTP and in the queue, PNG
 * bytes for the pipeline.
 */
export interface GenerationFields<Image> {
  mode: 'txt2img' | 'img2img';
  prompt: string;
  negativePrompt: string;
  /** Adapters named in the request's `adapters` list and in `<lora:...>` prompt tags. */
  adapters: AdapterUse[];
  /** A1111 sampler name, e.g. 'Euler a', 'DPM++ 2M'. */
  sampler: string;
  /** A1111 scheduler name ('Automatic', 'Karras', ...). */
  scheduler: string;
  steps: number;
  cfgScale: number;
  /** -1 asks for a random seed; the service draws it before queueing, so the pipeline never sees -1. */
  seed: number;
  subseed: number;
  subseedStrength: number;
  width: number;
  height: number;
  /** Images per UNet batch. */
  batchSize: number;
  /** Number of batches run one after the other. */
  nIter: number;
  clipSkip: number;
  eta: number | null;
  /** img2img only. */
  denoisingStrength: number | null;
  /** img2img only: init images (size/type checked and re-encoded to PNG by the service before queueing). */
  initImages: Image[];
  /** img2img inpainting mask, if any. */
  mask: Image | null;
  /** Checkpoint name as listed by listModels(); null = the backend's current model. */
  model: string | null;
  /** txt2img: A1111's hires fix (width x height is the first pass); absent or null = none. */
  hires?: HiresFields | null;
  /** A1111's pad_cond_uncond option (override_settings.pad_cond_uncond): off when absent. */
  padCondUncond?: boolean;
}

/**
 * A1111's hires-fix settings (hr_scale, hr_resize_x/y, hr_upscaler, hr_second_pass_steps,
 * denoising_strength), in the shape the pipeline takes (src/pipeline/hires.ts HiresRequest).
 */
export interface HiresFields {
  scale: number;
  /** 0 = follow the other side's aspect ratio; both 0 = use scale. */
  resizeX: number;
  resizeY: number;
  /** null = A1111's default "Latent", not written to the infotext. */
  upscaler: string | null;
  /** Second-pass steps; 0 = the first pass's steps. */
  steps: number;
  denoise: number;
  /** hr_prompt / hr_negative_prompt, <lora:> tags removed by the service; null = the first pass's. */
  prompt?: string | null;
  negativePrompt?: string | null;
  /** The second pass's sampler, a listSamplers() name (A1111's hr_scheduler folded in, e.g. "DPM++ 2M Karras"); null = the first pass's. */
  sampler?: string | null;
  /** hr_checkpoint_name when the request named one: it must be the first pass's checkpoint (A1111 then writes "Hires checkpoint"). */
  checkpoint?: string | null;
}

/**
 * A consent attestation for img2img of a photographed face: the reference of the pictured
 * person's signed consent and who attested to it. It only counts when the caller's role
 * has the policy's consent workflow (`roles.<name>.consentWorkflow`); the input check
 * writes it to the audit log when a pass relied on it.
 */
export interface ConsentAttestation {
  ref: string;
  /** Server-side identity of the caller who attested (from the key or session). */
  caller: string;
}

/** What the service decided for a request, server side; never taken from the HTTP request. */
export interface ServiceDecisions {
  /**
   * Graded intensity in force, 0-3, after the screener and the caller's role cap. The
   * pipeline turns it into adapter strength and safe-guidance settings.
   */
  intensity: number;
  /** img2img: the attested consent reference, read by the input check; null when none was given. */
  consentAttestation: ConsentAttestation | null;
}

/** Everything the pipeline needs for one generation. */
export interface GenerationRequest extends GenerationFields<Buffer>, ServiceDecisions {
  /** The screener's verdict, for pipelines that apply safe guidance on 'clamp'. */
  screening: ScreeningResult;
}

export interface GeneratedImage {
  png: Buffer;
  /** A1111 infotext (the PNG `parameters` text). */
  infotext: string;
  seed: number;
}

export interface GenerationResult {
  images: GeneratedImage[];
  /**
   * Facts the pipeline reports (timings and the like), stored with the job. Two keys are
   * read by provenance marking: `modelHash` ('sha256:<hex>' of the checkpoint) and
   * `adapterHashes` ({ name: 'sha256:<hex>' }).
   */
  info: Record<string, unknown> & { modelHash?: string; adapterHashes?: Record<string, string> };
}

export interface GenerateOptions {
  /** Called after each UNet step; previewPng is optional (costly previews may be sparse). */
  onProgress(step: number, total: number, previewPng?: Buffer): void;
  /** Aborted on cancel or shutdown: stop at the next step and throw signal.reason. */
  signal: AbortSignal;
  /** Service job id, for logs and audit correlation. */
  jobId: string;
}

export interface ModelInfo {
  /** A1111 `title`, e.g. 'v1-5-pruned-emaonly.safetensors [6ce0161689]'. */
  title: string;
  model_name: string;
  hash: string | null;
  sha256: string | null;
  filename: string;
}

export interface AdapterInfo {
  name: string;
  alias: string;
  path: string;
  metadata: Record<string, unknown>;
}

export interface SamplerInfo {
  name: string;
  aliases: string[];
  options: Record<string, unknown>;
}

export interface GenerationBackend {
  generate(request: GenerationRequest, options: GenerateOptions): Promise<GenerationResult>;
  listModels(): Promise<ModelInfo[]>;
  listLoras(): Promise<AdapterInfo[]>;
  listSamplers(): Promise<SamplerInfo[]>;
  /** The checkpoint title now loaded. */
  currentModel(): Promise<string | null>;
  /** Load a checkpoint by title or model_name; RedlineError('unknown_model') if absent. */
  switchModel(name: string): Promise<void>;
  close?(): Promise<void>;
}

/** What the screener is asked about. */
export interface ScreeningInput {
  prompt: string;
  negativePrompt: string;
  /** Adapter names (LoRA tags are screened as text too). */
  adapters: string[];
  /** Intensity the request asked for (0-3); null = let the wording decide. */
  requestedIntensity: number | null;
  /** Server-side identity: the role name from the caller's key or session. */
  role: string;
  /** The role's intensity cap from the role table in force. */
  roleCap: number;
}

/** A category the screener found, and the layer that found it. */
export interface ScreenedCategory {
  category: string;
  /** 'lexicon': the word lists and rules; 'semantic': the text-embedding comparison. */
  source: CategoryResult['source'];
  /** The rules that fired and the spans that put the request in the category: for the
   * audit log and operators, never for the requester (it would teach evasion). */
  rules?: string[];
  evidence?: AuditEvidence[];
}

export interface ScreeningResult {
  verdict: 'allow' | 'clamp' | 'refuse';
  /** Intensity the wording or request asked for, 0-3. */
  requestedIntensity: number;
  /** Intensity generation runs at, <= the role cap. */
  effectiveIntensity: number;
  /** Categories hit (e.g. 'graphic_injury', 'minors_graded'), for monitoring and the audit log. */
  categories: ScreenedCategory[];
  /** User-facing reason; must not teach evasion. */
  reason: string;
}

export interface Screener {
  screen(input: ScreeningInput): Promise<ScreeningResult>;
}

export interface OutputCheckContext {
  jobId: string;
  role: string;
  intensity: number;
  request: GenerationRequest;
}

export interface OutputCheckResult {
  /** 'pass' keeps the image; 'blur' replaces it with `png`; 'block' drops it. */
  action: 'pass' | 'blur' | 'block';
  png: Buffer;
  /** Categories that fired, for monitoring. */
  categories: string[];
  reason: string;
  scores: Record<string, number>;
}

/** Runs on every decoded image before anything is stored or returned (issue 6). */
export interface OutputChecker {
  check(png: Buffer, ctx: OutputCheckContext): Promise<OutputCheckResult>;
  /** Input check for img2img init images (faces + intensity); refuses before sampling. */
  checkInput?(png: Buffer, ctx: OutputCheckContext): Promise<{ allowed: boolean; reason: string; categories: string[] }>;
}

export interface ProvenanceStatus {
  parameters: boolean;
  xmp: boolean;
  c2pa: 'signed' | 'absent';
  watermark: boolean;
}

/** Adds provenance marks (parameters chunk, XMP, C2PA, watermark) to a returned image. */
export interface ProvenanceMarker {
  mark(png: Buffer, ctx: OutputCheckContext & { infotext: string; info: GenerationResult['info'] }): Promise<{ png: Buffer; status: ProvenanceStatus }>;
}

/** An event the service reports to the audit log (src/safety/audit when it lands). */
export interface AuditEvent {
  kind: 'screening' | 'generation' | 'block' | 'admin';
  caller: string;
  role: string;
  jobId?: string;
  /**
   * The submission's id: the job id once it is a job (the id a refused request's response
   * gave the caller otherwise). Screening rows carry it, so they link to their job's rows.
   */
  requestId?: string;
  /** Generation events: SHA-256 of each image returned, so an image leads back to its rows. */
  outputs?: { sha256: string; width?: number; height?: number }[];
  prompt?: string;
  negativePrompt?: string;
  verdict?: string;
  /** Screening events carry each category's source and evidence; output-check blocks have neither. */
  categories?: { category: string; source?: ScreenedCategory['source']; rules?: string[]; evidence?: AuditEvidence[] }[];
  requestedIntensity?: number;
  effectiveIntensity?: number;
  reason?: string;
  detail?: Record<string, unknown>;
}

export interface AuditSearch {
  caller?: string;
  kind?: string;
  text?: string;
  since?: string;
  limit: number;
}

export interface AuditSink {
  record(event: AuditEvent): Promise<void> | void;
  search?(query: AuditSearch): Promise<Record<string, unknown>[]> | Record<string, unknown>[];
}

/** A role as the service enforces it (caps from the policy once src/safety/policy lands). */
export interface RoleCaps {
  name: string;
  /** Highest graded intensity this role may receive, 0-3. */
  maxIntensity: number;
  canGenerate: boolean;
  canAdmin: boolean;
  /** May change the server's loaded checkpoint (A1111 POST /options sd_model_checkpoint). */
  canSwitchModel: boolean;
  /** Token bucket: capacity and refill in cost units (one unit = 512x512 x 20 steps x 1 image). */
  rate: { capacity: number; refillPerSecond: number };
  /** Largest width*height accepted, and largest batch_size*n_iter. */
  maxPixels: number;
  maxImages: number;
  maxSteps: number;
}

/** Everything `redline serve` and `redline worker` need from the layers below. */
export interface ServiceComponents {
  backend: GenerationBackend;
  screener: Screener;
  outputChecker: OutputChecker | null;
  provenance: ProvenanceMarker | null;
  audit: AuditSink | null;
  /** Role table from the policy; null = the service's built-in table (src/service/roles.ts). */
  roles: Record<string, RoleCaps> | null;
  /** The policy in force, shown to admins by GET /api/v1/admin/policy; absent = not published. */
  policy?: Policy | null;
}

/** A module passed to `--components` exports this. */
export type ComponentsFactory = (ctx: { dataDir: string; role: 'server' | 'worker' }) => Promise<ServiceComponents>;
