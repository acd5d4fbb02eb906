// Service components for the web studio's browser tests: the REAL generation pipeline
// (src/pipeline) on the golden tiny SD 1.5-shaped model, the real policy screener, role
// caps and hash-chained audit log (src/service/components.ts safetyComponents), and the
// real provenance marks. src/service/components.ts has no generation backend wired in yet,
// so `redline serve --components test/web/support/golden-components.ts` supplies one.
//
// Environment (set by the test that starts `redline serve`):
//   REDLINE_WEB_MODEL      diffusers folder of the model (the golden models/diffusers)
//   REDLINE_WEB_LORA_DIR   folder of LoRA files listed as adapters (the golden lora/)
//   REDLINE_WEB_STEP_MS    pause before each UNet evaluation, so a browser polling the
//                          page sees a job in flight (the tiny model samples in ms)
//   REDLINE_POLICY         policy file (safetyComponents reads it)
// Not wired: the image output checks (nsfwjs/face models; they have their own tests).
import { join } from 'node:path';
import sharp from 'sharp';
import { RedlineError } from '../../../src/errors.ts';
import { listAdapters } from '../../../src/adapters/index.ts';
import { Generator, resolveRequest, type GuidanceHook, type StepEvent } from '../../../src/pipeline/generate.ts';
import { hiresInfotext } from '../../../src/pipeline/hires.ts';
import { decodeImage, encodePng } from '../../../src/pipeline/image.ts';
import { generationInfotext } from '../../../src/pipeline/infotext.ts';
import { StableDiffusionModel } from '../../../src/pipeline/model.ts';
import { SAMPLER_NAMES } from '../../../src/sampling/index.ts';
import { loadPolicy, type Policy } from '../../../src/safety/policy/policy.ts';
import { loadSigningIdentity } from '../../../src/safety/provenance/index.ts';
import type {
  AdapterInfo, ComponentsFactory, GenerateOptions, GenerationBackend, GenerationRequest, GenerationResult, ModelInfo, SamplerInfo,
} from '../../../src/service/backend.ts';
import { safetyComponents } from '../../../src/service/components.ts';
import { serviceProvenance } from '../../../src/service/safety-wiring.ts';

// A1111's "Approx cheap" latent -> RGB factors for SD 1.5 (modules/sd_vae_approx.py),
// for live previews without a VAE decode.
const CHEAP_APPROX = [
  [0.298, 0.207, 0.208],
  [0.187, 0.286, 0.173],
  [-0.158, 0.189, 0.264],
  [-0.184, -0.271, -0.473],
] as const;

/** Preview PNG of the first image's x0 estimate, scaled up to the image size. */
export async function cheapPreview(latents: Float32Array, h: number, w: number, scale: number): Promise<Buffer> {
  const plane = h * w;
  const rgb = Buffer.alloc(plane * 3);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      let v = 0;
      for (let l = 0; l < 4; l++) v += latents[l * plane + i]! * CHEAP_APPROX[l]![c]!;
      rgb[i * 3 + c] = Math.max(0, Math.min(255, Math.round(((v + 1) / 2) * 255)));
    }
  }
  return sharp(rgb, { raw: { width: w, height: h, channels: 3 } }).resize(w * scale, h * scale, { kernel: 'nearest' }).png().toBuffer();
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class GoldenPipelineBackend implements GenerationBackend {
  private model: Promise<StableDiffusionModel> | null = null;

  constructor(
    private readonly modelPath: string,
    private readonly loraDir: string | null,
    private readonly policy: Policy,
    private readonly stepMs: number,
  ) {}

  private load(): Promise<StableDiffusionModel> {
    this.model ??= StableDiffusionModel.load(this.modelPath, { threads: 1 });
    return this.model;
  }

  private get title(): string {
    return `${this.modelPath.split('/').filter(Boolean).pop()} [golden]`;
  }

  /**
   * The model the generator runs on: the loaded one with this request's adapters set
   * (strength = requested weight x the policy's adapter strength for the effective
   * intensity). Jobs run one at a time per worker, so setting adapters on the shared
   * model is safe.
   */
  private async runnable(req: GenerationRequest): Promise<{ model: StableDiffusionModel; strengths: Record<string, number> }> {
    const base = await this.load();
    const strengths: Record<string, number> = {};
    const levelStrength = this.policy.categories.graphic_injury.levels[req.intensity]!.adapterStrength;
    await base.setAdapters(req.adapters.map((a) => {
      if (!this.loraDir) throw new RedlineError('unknown_adapter', 'this server has no adapter folder.');
      const s = a.weight * levelStrength;
      strengths[a.name] = s;
      return { adapter: base.loadAdapter(join(this.loraDir, `${a.name}.safetensors`)), te: s, unet: s };
    }));
    return { model: base, strengths };
  }

  async generate(req: GenerationRequest, opts: GenerateOptions): Promise<GenerationResult> {
    const initImage = req.mode === 'img2img' && req.initImages[0]
      ? await decodeImage(req.initImages[0], { width: req.width, height: req.height })
      : undefined;
    const resolved = resolveRequest({
      prompt: req.prompt, negativePrompt: req.negativePrompt, sampler: req.sampler, steps: req.steps, cfgScale: req.cfgScale,
      seed: req.seed, width: req.width, height: req.height, batchSize: req.batchSize, batchCount: req.nIter, clipSkip: req.clipSkip,
      ...(req.eta !== null ? { eta: req.eta } : {}),
      ...(initImage ? { initImage, strength: req.denoisingStrength ?? 0.75 } : {}),
      ...(req.hires && req.mode === 'txt2img' ? { hires: req.hires } : {}),
      ...(req.padCondUncond ? { padCondUncond: true } : {}),
    });
    const { model, strengths } = await this.runnable(req);
    const started = Date.now();
    {
      let done = 0;
      const previews: Promise<void>[] = [];
      const onStep = (e: StepEvent) => {
        done++;
        // A hires fix's second pass counts too, at its own size.
        const total = ((e.pass === 'first' ? e.steps : resolved.steps) + (resolved.hires?.steps ?? 0)) * resolved.batchCount;
        const step = done;
        if (!e.predOriginal) return opts.onProgress(step, total);
        const plane = 4 * (e.height / 8) * (e.width / 8);
        const first = e.predOriginal.slice(0, plane);
        previews.push(cheapPreview(first, e.height / 8, e.width / 8, 8).then((png) => opts.onProgress(step, total, png)));
      };
      let images;
      try {
        images = await new Generator(model).generate(resolved, { onStep, signal: opts.signal, ...(this.stepMs > 0 ? { guidance: this.pacedGuidance() } : {}) });
      } catch (err) {
        if (opts.signal.aborted) throw opts.signal.reason;
        throw err;
      }
      await Promise.all(previews);
      const loraText = req.adapters.map((a) => ` <lora:${a.name}:${a.weight}>`).join('');
      const out = [];
      for (const im of images) {
        out.push({
          png: await encodePng(im.image),
          seed: im.seed,
          infotext: generationInfotext({
            prompt: `${req.prompt}${loraText}`, negativePrompt: req.negativePrompt, steps: resolved.steps, sampler: resolved.sampler,
            cfgScale: resolved.cfgScale, seed: im.seed, width: resolved.width, height: resolved.height, model: model.name,
            ...(resolved.strength !== undefined ? { denoisingStrength: resolved.strength } : {}),
            ...(resolved.hires ? hiresInfotext(resolved.hires, { prompt: req.prompt, negativePrompt: req.negativePrompt, sampler: resolved.sampler }) : {}),
            clipSkip: resolved.clipSkip,
            ...(im.padConds ? { padConds: true } : {}),
            extra: [['Intensity', req.intensity]],
          }),
        });
      }
      return { images: out, info: { backend: 'golden tiny model (test)', seconds: (Date.now() - started) / 1000, adapterStrengths: strengths, modelHash: `folder:${model.name}` } };
    }
  }

  /** Plain classifier-free guidance (the generator's own formula) after a pause, so each
   * step takes at least stepMs. */
  private pacedGuidance(): GuidanceHook {
    const stepMs = this.stepMs;
    return {
      async combine({ uncond, cond, cfgScale, out }) {
        await sleep(stepMs);
        for (let k = 0; k < out.length; k++) out[k] = uncond[k]! + cfgScale * (cond[k]! - uncond[k]!);
      },
    };
  }

  async listModels(): Promise<ModelInfo[]> {
    const name = this.modelPath.split('/').filter(Boolean).pop()!;
    return [{ title: this.title, model_name: name, hash: null, sha256: null, filename: this.modelPath }];
  }

  async listLoras(): Promise<AdapterInfo[]> {
    if (!this.loraDir) return [];
    const listed = await listAdapters(this.loraDir);
    return listed.map((a) => ({ name: a.name, alias: a.name, path: join(this.loraDir!, a.file), metadata: { kind: a.kind, family: a.family } }));
  }

  async listSamplers(): Promise<SamplerInfo[]> {
    return SAMPLER_NAMES.map((name) => ({ name, aliases: [], options: {} }));
  }

  async currentModel(): Promise<string> {
    return this.title;
  }

  async switchModel(name: string): Promise<void> {
    if (name !== this.title && name !== this.modelPath.split('/').filter(Boolean).pop()) {
      throw new RedlineError('unknown_model', `no model '${name}'; this server has ${this.title}.`);
    }
  }

  async close(): Promise<void> {
    if (this.model) await (await this.model).release();
  }
}

export const createComponents: ComponentsFactory = async (ctx) => {
  const modelPath = process.env.REDLINE_WEB_MODEL;
  if (!modelPath) throw new RedlineError('components_config', 'REDLINE_WEB_MODEL must name the diffusers model folder.');
  const safety = await safetyComponents(ctx);
  const identity = await loadSigningIdentity({ dataDir: ctx.dataDir, onCreate: () => {} });
  return {
    ...safety,
    backend: new GoldenPipelineBackend(modelPath, process.env.REDLINE_WEB_LORA_DIR ?? null, loadPolicy(process.env.REDLINE_POLICY), Number(process.env.REDLINE_WEB_STEP_MS ?? 0)),
    outputChecker: null,
    provenance: serviceProvenance(identity, new TextEncoder().encode('RDLN01')),
  };
};
