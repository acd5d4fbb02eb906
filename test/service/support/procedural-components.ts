// TEST DOUBLE. Stands in for the generation pipeline and the safety screener while the
// service is tested on its own: it renders a procedural gradient PNG with sharp (no model,
// no real imagery), reports one progress event per "step", and screens prompts with two
// fixed rules. Production wiring is src/service/components.ts.
//
// Loaded in-process by tests (makeTestComponents) and by `redline serve|worker
// --components test/service/support/procedural-components.ts` in subprocess tests, where
// it is configured through environment variables:
//   REDLINE_TEST_STEP_MS   delay per step (default 2)
//   REDLINE_TEST_LEDGER    file that gets one line "<jobId> <pid>" per completed generation
import { appendFileSync } from 'node:fs';
import sharp from 'sharp';
import type {
  GenerateOptions, GenerationBackend, GenerationRequest, GenerationResult, OutputChecker, Screener, ScreeningInput,
  ScreeningResult, ServiceComponents,
} from '../../../src/service/backend.ts';
import { RedlineError } from '../../../src/errors.ts';

/** Word the double screener always refuses, standing in for a hard-blocked category. */
export const REFUSED_MARKER = 'zzrefusedmarker';
/** Word whose images the double output checker blocks. */
export const OUTPUT_BLOCK_MARKER = 'zzblockoutput';

export interface ProceduralOptions {
  stepMs?: number;
  ledger?: string;
  previewEvery?: number;
}

export class ProceduralBackend implements GenerationBackend {
  readonly requests: GenerationRequest[] = [];
  readonly completions = new Map<string, number>();
  private model = 'procedural-a.safetensors [0123456789]';
  private readonly stepMs: number;
  private readonly ledger: string | undefined;
  private readonly previewEvery: number;

  constructor(opts: ProceduralOptions = {}) {
    this.stepMs = opts.stepMs ?? 2;
    this.ledger = opts.ledger;
    this.previewEvery = opts.previewEvery ?? 5;
  }

  async generate(req: GenerationRequest, opts: GenerateOptions): Promise<GenerationResult> {
    this.requests.push(req);
    const total = req.steps;
    for (let step = 1; step <= total; step++) {
      // Yield to the event loop each step, as the ORT-backed pipeline does between UNet runs.
      await new Promise((r) => setTimeout(r, this.stepMs));
      opts.signal.throwIfAborted();
      const preview = step % this.previewEvery === 0 ? await render(32, 32, req.seed + step) : undefined;
      opts.onProgress(step, total, preview);
    }
    const images = [];
    for (let i = 0; i < req.batchSize * req.nIter; i++) {
      const seed = req.seed + i;
      images.push({
        png: await render(req.width, req.height, seed, req.initImages[0]),
        infotext: `${req.prompt}\nNegative prompt: ${req.negativePrompt}\nSteps: ${req.steps}, Sampler: ${req.sampler}, CFG scale: ${req.cfgScale}, Seed: ${seed}, Size: ${req.width}x${req.height}, Model: ${this.model}`,
        seed,
      });
    }
    opts.signal.throwIfAborted();
    this.completions.set(opts.jobId, (this.completions.get(opts.jobId) ?? 0) + 1);
    if (this.ledger) appendFileSync(this.ledger, `${opts.jobId} ${process.pid}\n`);
    return { images, info: { backend: 'procedural test double', intensity: req.intensity } };
  }

  async listModels() {
    return ['procedural-a.safetensors [0123456789]', 'procedural-b.safetensors [abcdef0123]'].map((title) => {
      const name = title.split(' ')[0]!;
      return { title, model_name: name.replace('.safetensors', ''), hash: title.slice(-11, -1), sha256: null, filename: `/models/${name}` };
    });
  }

  async listLoras() {
    return [{ name: 'blood_framework', alias: 'blood_framework', path: '/loras/blood_framework.safetensors', metadata: { ss_network_dim: 8 } }];
  }

  async listSamplers() {
    return [
      { name: 'Euler a', aliases: ['k_euler_a'], options: {} },
      { name: 'Euler', aliases: ['k_euler'], options: {} },
      { name: 'DPM++ 2M', aliases: ['k_dpmpp_2m'], options: {} },
    ];
  }

  async currentModel() {
    return this.model;
  }

  async switchModel(name: string) {
    const m = (await this.listModels()).find((x) => x.title === name || x.model_name === name);
    if (!m) throw new RedlineError('unknown_model', `no model '${name}'`);
    this.model = m.title;
  }
}

async function render(width: number, height: number, seed: number, init?: Buffer): Promise<Buffer> {
  if (init) {
    return sharp(init).resize(width, height, { fit: 'fill' }).modulate({ hue: seed % 360 }).png().toBuffer();
  }
  const px = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      px[o] = (x * 255) / width;
      px[o + 1] = (y * 255) / height;
      px[o + 2] = seed % 256;
    }
  }
  return sharp(px, { raw: { width, height, channels: 3 } }).png().toBuffer();
}

/** Refuses the marker word; otherwise caps the requested intensity at the role's cap. */
export class RuleScreener implements Screener {
  readonly inputs: ScreeningInput[] = [];
  async screen(input: ScreeningInput): Promise<ScreeningResult> {
    this.inputs.push(input);
    const requested = input.requestedIntensity ?? 0;
    if (`${input.prompt} ${input.negativePrompt} ${input.adapters.join(' ')}`.includes(REFUSED_MARKER)) {
      return { verdict: 'refuse', requestedIntensity: requested, effectiveIntensity: 0, categories: [{ category: 'test_hard_block', source: 'lexicon' }], reason: 'This request falls in a category this server does not generate.' };
    }
    const effective = Math.min(requested, input.roleCap);
    return {
      verdict: effective < requested ? 'clamp' : 'allow',
      requestedIntensity: requested,
      effectiveIntensity: effective,
      categories: requested > 0 ? [{ category: 'graphic_injury', source: 'lexicon' }] : [],
      reason: effective < requested ? `Intensity lowered to ${effective}, the limit for your role.` : '',
    };
  }
}

/** Blocks every image of a prompt carrying OUTPUT_BLOCK_MARKER. */
export class MarkerOutputChecker implements OutputChecker {
  async check(png: Buffer, ctx: Parameters<OutputChecker['check']>[1]) {
    const block = ctx.request.prompt.includes(OUTPUT_BLOCK_MARKER);
    return { action: block ? ('block' as const) : ('pass' as const), png, categories: block ? ['test_output'] : [], reason: block ? 'The image did not pass the output check.' : '', scores: { test: block ? 1 : 0 } };
  }
}

export function makeTestComponents(opts: ProceduralOptions = {}): ServiceComponents & { backend: ProceduralBackend; screener: RuleScreener } {
  return { backend: new ProceduralBackend(opts), screener: new RuleScreener(), outputChecker: new MarkerOutputChecker(), provenance: null, audit: null, roles: null };
}

export async function createComponents(): Promise<ServiceComponents> {
  return makeTestComponents({
    stepMs: Number(process.env.REDLINE_TEST_STEP_MS ?? 2),
    ...(process.env.REDLINE_TEST_LEDGER ? { ledger: process.env.REDLINE_TEST_LEDGER } : {}),
  });
}
