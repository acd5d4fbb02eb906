// The service's GenerationBackend over the real pipeline (src/pipeline): model folder and
// LoRA folder listings, request mapping, graded adapters set by the effective intensity
// (never by the request), Safe Latent Diffusion when a graded request was clamped, and
// live progress with cheap latent previews.
import { existsSync, statSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import sharp from 'sharp';
import { type AdapterListing, listAdapters } from '../adapters/registry.ts';
import { RedlineError } from '../errors.ts';
import { fileHashes, modelShortHash } from '../models/checkpoint/hash.ts';
import { listModels as listModelFolder } from '../models/checkpoint/registry.ts';
import { Generator, MAX_SIDE } from '../pipeline/generate.ts';
import { adapterInfo, currentSidecar } from './adapter-files.ts';
import { samplerWithScheduler } from './execute.ts';
import { checkpointShortTitle } from './hires-prompts.ts';
import { hiresInfotext, resolveHires } from '../pipeline/hires.ts';
import { decodeImage, encodePng } from '../pipeline/image.ts';
import { generationInfotext, type HiresInfo } from '../pipeline/infotext.ts';
import { StableDiffusionModel } from '../pipeline/model.ts';
import { embeddedAdaptersPath, embeddedModelPath } from '../pipeline/embedded.ts';
import type { Provider } from '../runtime/session.ts';
import { resolveSamplerName, SAMPLER_NAMES } from '../sampling/index.ts';
import type { IntensityLevel } from '../safety/categories.ts';
import { planGradedGeneration } from '../safety/graded.ts';
import type { Policy } from '../safety/policy/policy.ts';
import type {
  AdapterInfo, GenerateOptions, GenerationBackend, GenerationRequest, GenerationResult, ModelInfo, SamplerInfo,
} from './backend.ts';

export interface PipelineBackendOptions {
  /** Folder of checkpoints (single files and diffusers folders). */
  modelsDir?: string;
  /** Checkpoint loaded first: a path, or a name inside modelsDir. Default: the first usable one. */
  model?: string;
  /** Folder of LoRA/LyCORIS files (with optional NAME.json sidecars). */
  lorasDir?: string;
  /** Folder with vocab.json + merges.txt for single-file checkpoints. */
  tokenizerDir?: string;
  provider?: Provider;
  policy: Policy;
}

interface ModelEntry {
  path: string;
  info: ModelInfo;
}

/** A1111's "Approx cheap" latent -> RGB map: a preview for a few microseconds per pixel. */
const LATENT_RGB = [
  [0.298, 0.207, 0.208],
  [0.187, 0.286, 0.173],
  [-0.158, 0.189, 0.264],
  [-0.184, -0.271, -0.473],
] as const;

async function previewPng(latents: Float32Array, h: number, w: number): Promise<Buffer> {
  const rgb = new Uint8Array(h * w * 3);
  const plane = h * w;
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) {
      let v = 0;
      for (let l = 0; l < 4; l++) v += latents[l * plane + p]! * LATENT_RGB[l]![c]!;
      rgb[p * 3 + c] = Math.max(0, Math.min(255, Math.round(((v + 1) / 2) * 255)));
    }
  }
  return sharp(rgb, { raw: { width: w, height: h, channels: 3 } }).resize(w * 4, h * 4, { kernel: 'nearest' }).png().toBuffer();
}



export class PipelineBackend implements GenerationBackend {
  private model: StableDiffusionModel | null = null;
  private modelEntry: ModelEntry | null = null;
  private models: ModelEntry[] = [];
  private adapters: AdapterListing[] = [];
  private busy: Promise<unknown> = Promise.resolve();

  private constructor(private readonly opts: PipelineBackendOptions) {}

  static async open(opts: PipelineBackendOptions): Promise<PipelineBackend> {
    const b = new PipelineBackend(opts);
    await b.rescan();
    const embedded = embeddedModelPath();
    if (!opts.model && b.models.length === 0 && embedded) {
      // first run with no checkpoints configured: the embedded default model, and its demo
      // adapters unless a LoRA folder of the operator's exists
      b.opts.model = embedded;
      const adapters = embeddedAdaptersPath();
      if (adapters && !(opts.lorasDir && existsSync(opts.lorasDir))) b.opts.lorasDir = adapters;
      await b.rescan();
    }
    const first = b.opts.model ? b.findModel(b.opts.model) : b.models[0];
    if (!first) {
      throw new RedlineError('model_missing', 'No usable SD 1.5 checkpoint was found for the server.',
        'Set REDLINE_MODEL to a checkpoint (a diffusers folder or an SD 1.5 .safetensors), or put checkpoints in REDLINE_MODELS_DIR (default <data-dir>/models).');
    }
    await b.load(first);
    return b;
  }

  private async rescan(): Promise<void> {
    const entries: ModelEntry[] = [];
    const add = async (path: string): Promise<void> => {
      const isFile = statSync(path).isFile();
      const hashes = isFile ? await fileHashes(path) : null;
      const name = basename(path);
      const short = hashes ? modelShortHash(hashes) : null;
      entries.push({
        path,
        info: {
          title: short ? `${name} [${short}]` : name,
          model_name: extname(name) === '.safetensors' ? name.slice(0, -'.safetensors'.length) : name,
          hash: short,
          sha256: hashes?.sha256 ?? null,
          filename: path,
        },
      });
    };
    if (this.opts.model && existsSync(this.opts.model)) await add(resolve(this.opts.model));
    if (this.opts.modelsDir && existsSync(this.opts.modelsDir)) {
      for (const m of await listModelFolder(this.opts.modelsDir)) {
        const p = resolve(this.opts.modelsDir, m.path);
        if (m.usable && !entries.some((e) => e.path === p)) await add(p);
      }
    }
    this.models = entries;
    this.adapters = this.opts.lorasDir && existsSync(this.opts.lorasDir) ? await listAdapters(this.opts.lorasDir) : [];
  }

  private findModel(name: string): ModelEntry | undefined {
    const abs = existsSync(name) ? resolve(name) : null;
    return this.models.find((m) => m.path === abs || m.info.title === name || m.info.model_name === name || basename(m.path) === name);
  }

  private async load(entry: ModelEntry): Promise<void> {
    const next = await StableDiffusionModel.load(entry.path, {
      ...(this.opts.tokenizerDir ? { tokenizerDir: this.opts.tokenizerDir } : {}),
      ...(this.opts.provider ? { provider: this.opts.provider } : {}),
    });
    const old = this.model;
    this.model = next;
    this.modelEntry = entry;
    await old?.release();
  }

  async generate(request: GenerationRequest, options: GenerateOptions): Promise<GenerationResult> {
    // One generation at a time per backend: sessions and adapter state are shared.
    const run = this.busy.then(() => this.generateNow(request, options));
    this.busy = run.catch(() => undefined);
    return run;
  }

  private async generateNow(request: GenerationRequest, options: GenerateOptions): Promise<GenerationResult> {
    if (request.model && this.modelEntry && request.model !== this.modelEntry.info.title && request.model !== this.modelEntry.info.model_name) {
      await this.switchModel(request.model);
    }
    const model = this.model!;
    const entry = this.modelEntry!;
    const policy = this.opts.policy;
    const effective = Math.max(0, Math.min(3, Math.trunc(request.intensity))) as IntensityLevel;
    const requested = Math.max(effective, Math.min(3, Math.trunc(request.screening.requestedIntensity))) as IntensityLevel;

    // Graded adapters, CFG ceiling and SLD from the effective level (src/safety/graded.ts).
    const adapterHashes: Record<string, string> = {};
    const loraHashes: Array<{ name: string; hash: string }> = [];
    const uses = request.adapters.map((use) => {
      const a = this.adapters.find((x) => x.name === use.name);
      if (!a) throw new RedlineError('unknown_adapter', `No adapter named "${use.name}" is installed.`, 'GET /sdapi/v1/loras lists the installed adapters.');
      if (a.hashes) {
        adapterHashes[a.name] = `sha256:${a.hashes.sha256}`;
        loraHashes.push({ name: a.name, hash: a.hashes.a1111 });
      }
      // Not the listing's sidecar: one broken or removed since must not run on stale calibration.
      const path = join(this.opts.lorasDir!, a.file);
      const sidecar = currentSidecar(path, a.name, Boolean(a.sidecar));
      return { name: a.name, path, te: use.weight, unet: use.weight, sidecar };
    });
    const plan = planGradedGeneration(policy, requested, effective, uses, request.cfgScale);
    const { adapters: adapterRequests, cfgScale, sld } = plan;

    let initImage;
    if (request.mode === 'img2img') {
      if (!request.initImages[0]) throw new RedlineError('bad_request', 'img2img needs an init image.');
      initImage = await decodeImage(request.initImages[0], { width: request.width, height: request.height });
    }
    const sampler = resolveSamplerName(samplerWithScheduler(request.sampler, request.scheduler));
    const steps = request.mode === 'img2img' ? Math.max(1, Math.trunc(request.steps * (request.denoisingStrength ?? 0.75))) : request.steps;
    // A hires fix: both passes count towards the progress; its fields go to the infotext.
    const hires = request.hires && request.mode === 'txt2img'
      ? resolveHires(request.hires, { width: request.width, height: request.height, steps: request.steps }, MAX_SIDE)
      : undefined;
    const total = (steps + (hires?.steps ?? 0)) * request.nIter;
    let done = 0;
    const started = Date.now();
    // SLD state is per batch: a fresh guidance object for each batch of the request.
    const images = [];
    let padConds = false;
    for (let b = 0; b < request.nIter; b++) {
      const batchGuidance = plan.guidance();
      const out = await new Generator(model).generate({
        prompt: request.prompt,
        negativePrompt: request.negativePrompt,
        sampler,
        steps: request.steps,
        cfgScale,
        seed: request.seed + b * request.batchSize,
        rng: 'gpu',
        width: request.width,
        height: request.height,
        batchSize: request.batchSize,
        batchCount: 1,
        clipSkip: request.clipSkip,
        ...(request.eta !== null ? { eta: request.eta } : {}),
        ...(initImage ? { initImage, strength: request.denoisingStrength ?? 0.75 } : {}),
        ...(hires && request.hires ? { hires: request.hires } : {}),
        ...(request.padCondUncond ? { padCondUncond: true } : {}),
        adapters: adapterRequests,
      }, {
        signal: options.signal,
        ...(batchGuidance ? { guidance: batchGuidance } : {}),
        onStep: (e) => {
          done++;
          const wantPreview = e.predOriginal && (e.step % 5 === 0 || e.step === e.steps);
          if (!wantPreview) {
            options.onProgress(done, total);
            return;
          }
          const h = e.height / 8;
          const w = e.width / 8;
          void previewPng(e.predOriginal!.subarray(0, 4 * h * w), h, w).then(
            (png) => options.onProgress(done, total, png),
            () => options.onProgress(done, total),
          );
        },
      });
      for (const img of out) {
        const infotext = generationInfotext({
          prompt: request.prompt,
          negativePrompt: request.negativePrompt,
          steps: request.steps,
          sampler,
          cfgScale,
          seed: img.seed,
          width: request.width,
          height: request.height,
          ...(entry.info.hash ? { modelHash: entry.info.hash } : {}),
          model: entry.info.model_name,
          ...(initImage ? { denoisingStrength: request.denoisingStrength ?? 0.75 } : {}),
          ...(hires ? withHiresCheckpoint(hiresInfotext(hires, { prompt: request.prompt, negativePrompt: request.negativePrompt, sampler }), request.hires?.checkpoint ? checkpointShortTitle(entry.info) : undefined) : {}),
          clipSkip: request.clipSkip,
          ...(loraHashes.length ? { loras: loraHashes } : {}),
          ...(img.padConds ? { padConds: true } : {}),
          ...(effective > 0 || requested > 0 ? { extra: [['Intensity', effective] as const] } : {}),
        });
        padConds ||= img.padConds;
        images.push({ png: await encodePng(img.image), infotext, seed: img.seed });
      }
    }
    return {
      images,
      info: {
        modelHash: entry.info.sha256 ? `sha256:${entry.info.sha256}` : `name:${entry.info.model_name}`,
        adapterHashes,
        seconds: (Date.now() - started) / 1000,
        provider: model.provider,
        intensity: effective,
        sld: Boolean(sld),
        // For the A1111 API's extra_generation_params, which holds it per request.
        ...(padConds ? { padConds: true } : {}),
      },
    };
  }

  async listModels(): Promise<ModelInfo[]> {
    return this.models.map((m) => m.info);
  }

  async listLoras(): Promise<AdapterInfo[]> {
    return this.adapters.map((a) => adapterInfo(a, this.opts.lorasDir ?? ''));
  }

  async listSamplers(): Promise<SamplerInfo[]> {
    return SAMPLER_NAMES.map((name) => ({ name, aliases: [name.toLowerCase().replace(/[^a-z0-9]+/g, '_')], options: {} }));
  }

  async currentModel(): Promise<string | null> {
    return this.modelEntry?.info.title ?? null;
  }

  async switchModel(name: string): Promise<void> {
    const entry = this.findModel(name);
    if (!entry) throw new RedlineError('unknown_model', `No checkpoint named "${name}".`, 'GET /sdapi/v1/sd-models lists the checkpoints.');
    if (entry === this.modelEntry) return;
    await this.load(entry);
  }

  async close(): Promise<void> {
    await this.model?.release();
    this.model = null;
  }
}

function withHiresCheckpoint<T extends { hires: HiresInfo }>(fields: T, checkpoint: string | undefined): T {
  return checkpoint ? { ...fields, hires: { ...fields.hires, checkpoint } } : fields;
}
