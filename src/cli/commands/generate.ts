import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { dirname, extname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { readSidecar } from '../../adapters/registry.ts';
import { RedlineError } from '../../errors.ts';
import { fileHashes, loraShortHash, modelShortHash } from '../../models/checkpoint/hash.ts';
import { openCheckpoint } from '../../models/checkpoint/load.ts';
import { Generator, resolveRequest } from '../../pipeline/generate.ts';
import { HIRES_UPSCALERS, type HiresRequest, hiresInfotext } from '../../pipeline/hires.ts';
import { decodeImage, encodePng } from '../../pipeline/image.ts';
import { generationInfotext } from '../../pipeline/infotext.ts';
import { StableDiffusionModel } from '../../pipeline/model.ts';
import { embeddedAdaptersPath, embeddedModelPath } from '../../pipeline/embedded.ts';
import { PROVIDERS, type Provider } from '../../runtime/session.ts';
import { checkRngSource, SAMPLER_NAMES } from '../../sampling/index.ts';
import { applyProvenance, defaultDataDir, loadSigningIdentity } from '../../safety/provenance/index.ts';
import { planGradedGeneration } from '../../safety/graded.ts';
import { loadPolicy } from '../../safety/policy/policy.ts';
import { type ScreenRequest, type ScreenResult, Screener } from '../../safety/screen/screener.ts';
import { ImageSafetyChecks, outputCheckOptionsFromPolicy, checkOutputImage } from '../../safety/output/index.ts';
import { LikenessStore } from '../../safety/likeness/store.ts';
import { ProgressBar } from '../progress.ts';

export const summary = 'generate images (txt2img, or img2img with --init-image)';

const HELP = `Usage: redline generate --prompt TEXT [options]

  --model PATH          SD 1.5 checkpoint: diffusers folder or single-file .safetensors
  --tokenizer DIR       folder with vocab.json + merges.txt (single files carry none)
  --prompt TEXT         prompt, A1111 syntax: (word:1.2), [word], BREAK, <lora:name:w>
  --negative TEXT       negative prompt
  --sampler NAME        ${SAMPLER_NAMES.join(', ')} (default Euler a)
  --steps N             sampling steps (default 20)
  --cfg X               classifier-free guidance scale (default 7)
  --seed N              seed, -1 for random (default -1); image i of a batch uses seed+i
  --rng cpu|gpu         A1111 seed mode: torch CPU or CUDA generator (default gpu)
  --width W --height H  multiples of 8 (default: the model's native size, 512 for SD 1.5)
  --batch N             images per batch (default 1)
  --batch-count N       batches run one after another (default 1)
  --clip-skip N         A1111 clip skip (default 1)
  --lora-dir DIR        folder of LoRA files named by <lora:name:...> tags
                        (default $REDLINE_LORAS_DIR, ./models/Lora, or the embedded
                        model's demo adapters)
  --init-image FILE     img2img: PNG/JPEG/WebP init image (resized to W x H)
  --strength S          denoising strength in (0, 1] (A1111's "Denoising strength"):
                        img2img's (default 0.75), or the hires pass's (default 0.7);
                        --denoise S is the same option
  --hires               A1111's hires fix: W x H is the first pass, then an upscale and
                        an img2img pass at the larger size (any --hires-* flag turns it on)
  --hires-scale X       upscale factor, 1 to 4 (default 2)
  --hires-resize WxH    target size instead of a factor; 0 for a side follows the aspect
                        ratio; with both sides the upscale covers WxH and is cropped
  --hires-upscaler NAME (default Latent) one of
                        ${HIRES_UPSCALERS.slice(0, 3).join(', ')},
                        ${HIRES_UPSCALERS.slice(3, 6).join(', ')},
                        ${HIRES_UPSCALERS.slice(6).join(', ')}
  --hires-steps N       second-pass steps (default: --steps); they are the last N of a
                        schedule of int(N / strength) steps, as A1111 runs them
  --hires-prompt TEXT   the second pass's prompt (default: --prompt); its <lora:> tags
                        must be the prompt's, the first pass's LoRAs stay applied
  --hires-negative TEXT the second pass's negative prompt (default: --negative)
  --hires-sampler NAME  the second pass's sampler (default: --sampler)
  --pad-cond-uncond     A1111's "Pad prompt/negative prompt" option: the shorter of the
                        prompt and negative prompt gets the empty prompt's encoding
                        appended so both run in one UNet batch (changes the image)
  --device NAME         ${PROVIDERS.join(', ')} (default cpu)
  --allow-cpu-fallback  use the CPU when the device cannot start
  --out FILE|DIR        a .png file (one image) or a folder (default outputs/)
  --json                print a JSON result on stdout`;

function num(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw new RedlineError('bad_option', `--${name} must be a number, got "${v}".`);
  return n;
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      tokenizer: { type: 'string' },
      prompt: { type: 'string' },
      negative: { type: 'string', default: '' },
      sampler: { type: 'string', default: 'Euler a' },
      steps: { type: 'string' },
      cfg: { type: 'string' },
      seed: { type: 'string' },
      rng: { type: 'string', default: 'gpu' },
      width: { type: 'string' },
      height: { type: 'string' },
      batch: { type: 'string' },
      'batch-count': { type: 'string' },
      'clip-skip': { type: 'string' },
      'init-image': { type: 'string' },
      'lora-dir': { type: 'string' },
      strength: { type: 'string' },
      denoise: { type: 'string' },
      hires: { type: 'boolean', default: false },
      'hires-scale': { type: 'string' },
      'hires-resize': { type: 'string' },
      'hires-upscaler': { type: 'string' },
      'hires-steps': { type: 'string' },
      'hires-prompt': { type: 'string' },
      'hires-negative': { type: 'string' },
      'hires-sampler': { type: 'string' },
      'pad-cond-uncond': { type: 'boolean', default: false },
      device: { type: 'string', default: 'cpu' },
      'allow-cpu-fallback': { type: 'boolean', default: false },
      out: { type: 'string', default: 'outputs' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (values.prompt === undefined) throw new RedlineError('missing_option', '--prompt is required.', 'See redline generate --help.');
  const modelPath = values.model ?? defaultModelPath();
  if (!PROVIDERS.includes(values.device as Provider)) {
    throw new RedlineError('bad_option', `Unknown device "${values.device}".`, `Use one of ${PROVIDERS.join(', ')}.`);
  }
  // Default size: the model's own (unet sample_size x 8: 512 for SD 1.5, 128 for the
  // embedded model), read from its config before anything heavy loads.
  const native = nativeSize(modelPath);
  const width = num(values.width, 'width') ?? native;
  const height = num(values.height, 'height') ?? native;
  let initImage;
  if (values['init-image']) {
    const w = width;
    const h = height;
    initImage = await decodeImage(resolve(values['init-image']), { width: w, height: h });
  }
  if (values.strength !== undefined && values.denoise !== undefined && num(values.strength, 'strength') !== num(values.denoise, 'denoise')) {
    throw new RedlineError('bad_option', `--strength ${values.strength} and --denoise ${values.denoise} are the same option with different values.`, 'Give one of them.');
  }
  const strength = num(values.strength ?? values.denoise, values.strength !== undefined ? 'strength' : 'denoise');
  const hires = hiresOptions(values, strength);
  // Validate everything before the (slow) model load.
  const request = resolveRequest({
    prompt: values.prompt,
    negativePrompt: values.negative,
    sampler: values.sampler,
    ...opt('steps', num(values.steps, 'steps')),
    ...opt('cfgScale', num(values.cfg, 'cfg')),
    ...opt('seed', num(values.seed, 'seed')),
    rng: checkRngSource(values.rng),
    ...opt('width', width),
    ...opt('height', height),
    ...opt('batchSize', num(values.batch, 'batch')),
    ...opt('batchCount', num(values['batch-count'], 'batch-count')),
    ...opt('clipSkip', num(values['clip-skip'], 'clip-skip')),
    ...(initImage ? { initImage, strength: strength ?? 0.75 } : {}),
    ...(hires ? { hires } : {}),
    padCondUncond: values['pad-cond-uncond'],
  });
  // The CLI is an interface like the API: the same policy screens the prompts before
  // sampling and the same checks judge every image before it is written. The local
  // operator screens as the policy's 'creator' role (REDLINE_POLICY selects the policy).
  const policy = loadPolicy(process.env.REDLINE_POLICY);
  const screening = screenPrompts(new Screener(policy), {
    prompt: values.prompt,
    negativePrompt: values.negative,
    loras: request.loraTags.map((t) => t.name),
  }, request.hires ? { prompt: request.hires.prompt ?? values.prompt, negativePrompt: request.hires.negativePrompt ?? values.negative } : null);
  if (screening.verdict === 'refuse') {
    throw new RedlineError('refused', screening.reason ?? 'This request cannot be generated under the policy in force.');
  }
  if (screening.verdict === 'clamp' && !values.json) console.error(`redline: ${screening.reason}`);
  // <lora:name:w> / <lora:name:te:unet> tags name files in the LoRA folder, as in A1111.
  // default: ./models/Lora as A1111 has it, else the embedded model's demo adapters
  const loraDir = resolve(values['lora-dir'] ?? process.env.REDLINE_LORAS_DIR ?? (existsSync('models/Lora') ? 'models/Lora' : (embeddedAdaptersPath() ?? 'models/Lora')));
  const uses = request.loraTags.map((t) => {
    const file = ['.safetensors', ''].map((ext) => join(loraDir, `${t.name}${ext}`)).find((p) => existsSync(p) && statSync(p).isFile());
    if (!file) {
      throw new RedlineError('unknown_adapter', `The prompt names the adapter "${t.name}", but ${loraDir} has no ${t.name}.safetensors.`,
        'Put the file there, or point --lora-dir (or REDLINE_LORAS_DIR) at the folder that holds it; redline loras DIR lists a folder.');
    }
    const { sidecar, problems } = readSidecar(file);
    for (const p of problems) console.error(`redline: ${t.name}: ${p}`);
    return { name: t.name, path: file, te: t.te, unet: t.unet, sidecar };
  });
  // Graded adapters run at the strength of the effective level (the role's cap applies here
  // as in the service), with the level's CFG ceiling and SLD when the prompt was clamped.
  const plan = planGradedGeneration(policy, screening.intensity, screening.effectiveIntensity, uses, request.cfgScale);
  request.adapters = plan.adapters;
  request.cfgScale = plan.cfgScale;
  const guidance = plan.guidance();

  const loadStart = Date.now();
  const model = await StableDiffusionModel.load(modelPath, {
    ...(values.tokenizer ? { tokenizerDir: values.tokenizer } : {}),
    provider: values.device as Provider,
    allowFallback: values['allow-cpu-fallback'],
    onProgress: (what) => {
      if (!values.json) process.stderr.write(`loading ${what}...\n`);
    },
  });
  const loadSeconds = (Date.now() - loadStart) / 1000;
  try {
    const hashes = statSync(modelPath).isFile() ? await fileHashes(modelPath) : null;
    const loraHashes = await Promise.all(uses.map(async (u) => ({ name: u.name, hash: loraShortHash(await fileHashes(u.path)) })));
    // Both passes of a hires fix count: the first pass's steps, then the second pass's.
    const firstPassSteps = request.strength ? Math.trunc(request.steps * request.strength) : request.steps;
    const total = (firstPassSteps + (request.hires?.steps ?? 0)) * request.batchCount;
    const bar = new ProgressBar('sampling', Math.max(1, total), 'step');
    let done = 0;
    const genStart = Date.now();
    const images = await new Generator(model).generate(request, {
      ...(guidance ? { guidance } : {}),
      onStep: () => {
        done++;
        bar.update(done);
      },
    });
    bar.finish();
    const seconds = (Date.now() - genStart) / 1000;
    const identity = await loadSigningIdentity();
    const checks = await ImageSafetyChecks.load({
      options: outputCheckOptionsFromPolicy(policy.outputChecks),
      likeness: LikenessStore.liveGallery(defaultDataDir()),
    });
    const outPath = resolve(values.out);
    const single = extname(outPath).toLowerCase() === '.png';
    if (single && images.length > 1) {
      throw new RedlineError('bad_option', `--out ${values.out} names one file but ${images.length} images were made.`, 'Give a folder instead.');
    }
    mkdirSync(single ? dirname(outPath) : outPath, { recursive: true });
    const results = [];
    let blocked = 0;
    for (const img of images) {
      const judged = await checkOutputImage(checks, img.image, { intensity: screening.effectiveIntensity });
      if (judged.verdict === 'block' || !judged.image) {
        blocked++;
        console.error(`redline: image ${img.index} (seed ${img.seed}) was blocked by the output checks (${judged.reasons.map((r) => r.message).join(', ')}); it was not written.`);
        continue;
      }
      const shown = { ...img.image, data: judged.image.data };
      const infotext = generationInfotext({
        prompt: values.prompt,
        negativePrompt: values.negative,
        steps: request.steps,
        sampler: request.sampler,
        cfgScale: request.cfgScale,
        seed: img.seed,
        width: request.width,
        height: request.height,
        ...(hashes ? { modelHash: modelShortHash(hashes) } : {}),
        model: model.name,
        ...(request.strength !== undefined ? { denoisingStrength: request.strength } : {}),
        ...(request.hires ? hiresInfotext(request.hires, { prompt: values.prompt, negativePrompt: values.negative, sampler: request.sampler }) : {}),
        clipSkip: request.clipSkip,
        rng: request.rng,
        ...(loraHashes.length ? { loras: loraHashes } : {}),
        ...(img.padConds ? { padConds: true } : {}),
      });
      const png = await applyProvenance(await encodePng(shown), {
        infotext,
        modelHash: hashes ? `sha256:${hashes.sha256}` : `folder:${model.name}`,
        adapterHashes: {},
        payload: img.image.width * img.image.height >= 256 * 256 ? Buffer.from('RDLN01', 'ascii') : null,
        identity,
      });
      const file = single ? outPath : join(outPath, `${String(img.index).padStart(5, '0')}-${img.seed}.png`);
      writeFileSync(file, png);
      results.push({ path: file, seed: img.seed, infotext });
      if (!values.json) console.error(`wrote ${file}`);
    }
    if (values.json) {
      console.log(JSON.stringify({ images: results, provider: model.provider, loadSeconds, seconds, secondsPerStep: seconds / Math.max(1, done) }));
    } else {
      console.error(`${images.length} image(s) in ${seconds.toFixed(1)} s (${(seconds / Math.max(1, done)).toFixed(2)} s/step, model load ${loadSeconds.toFixed(1)} s, ${model.provider})`);
    }
    return blocked > 0 ? 3 : 0;
  } finally {
    await model.release();
  }
}

function nativeSize(modelPath: string): number {
  const ckpt = openCheckpoint(modelPath);
  try {
    const sample = Number(ckpt.configs.unet.sample_size);
    return Number.isInteger(sample) && sample > 0 ? sample * 8 : 512;
  } finally {
    ckpt.close();
  }
}

/** The hires fix the flags ask for, or undefined when none of them is given. */
function hiresOptions(values: Record<string, string | boolean | undefined>, strength: number | undefined): HiresRequest | undefined {
  const text = (k: string): string | undefined => (typeof values[k] === 'string' ? (values[k] as string) : undefined);
  const on = values.hires === true || ['hires-scale', 'hires-resize', 'hires-upscaler', 'hires-steps', 'hires-prompt', 'hires-negative', 'hires-sampler'].some((k) => text(k) !== undefined);
  if (!on) return undefined;
  if (values['init-image']) {
    throw new RedlineError('bad_option', 'The hires fix is a txt2img option; it cannot be combined with --init-image.');
  }
  const hires: HiresRequest = {};
  const scale = num(text('hires-scale'), 'hires-scale');
  if (scale !== undefined) hires.scale = scale;
  const resize = text('hires-resize');
  if (resize !== undefined) {
    const m = /^(\d+)x(\d+)$/i.exec(resize.trim());
    if (!m) throw new RedlineError('bad_option', `--hires-resize must be WxH (e.g. 1024x1024, or 1024x0 to keep the aspect ratio), got "${resize}".`);
    if (scale !== undefined) throw new RedlineError('bad_option', '--hires-scale and --hires-resize both set the target size.', 'Give one of them.');
    hires.resizeX = Number(m[1]);
    hires.resizeY = Number(m[2]);
  }
  const upscaler = text('hires-upscaler');
  if (upscaler !== undefined) hires.upscaler = upscaler;
  const steps = num(text('hires-steps'), 'hires-steps');
  if (steps !== undefined) hires.steps = steps;
  if (strength !== undefined) hires.denoise = strength;
  const prompt = text('hires-prompt');
  if (prompt !== undefined) hires.prompt = prompt;
  const negative = text('hires-negative');
  if (negative !== undefined) hires.negativePrompt = negative;
  const sampler = text('hires-sampler');
  if (sampler !== undefined) hires.sampler = sampler;
  return hires;
}

/**
 * Screens the prompts, and a hires pass's own prompts alone and joined to the first pass's
 * (the final image carries both passes, so a combination across them counts): the worst
 * verdict stands, at the highest intensity the wording asked for.
 */
function screenPrompts(screener: Screener, first: ScreenRequest, hires: { prompt: string; negativePrompt: string } | null): ScreenResult {
  const runs = [screener.screen(first, CLI_ROLE)];
  if (hires && (hires.prompt !== first.prompt || hires.negativePrompt !== (first.negativePrompt ?? ''))) {
    runs.push(screener.screen({ ...first, ...hires }, CLI_ROLE));
    runs.push(screener.screen({ ...first, prompt: `${first.prompt}\n${hires.prompt}`, negativePrompt: `${first.negativePrompt ?? ''}\n${hires.negativePrompt}` }, CLI_ROLE));
  }
  const refused = runs.find((r) => r.verdict === 'refuse');
  if (refused) return refused;
  return {
    ...(runs.find((r) => r.verdict === 'clamp') ?? runs[0]!),
    categories: runs.flatMap((r) => r.categories),
    intensity: Math.max(...runs.map((r) => r.intensity)) as ScreenResult['intensity'],
    effectiveIntensity: Math.max(...runs.map((r) => r.effectiveIntensity)) as ScreenResult['effectiveIntensity'],
  };
}

/** The policy role the local command line screens as. */
const CLI_ROLE = 'creator';

function opt<K extends string, V>(key: K, v: V | undefined): { [P in K]?: V } {
  return (v === undefined ? {} : { [key]: v }) as { [P in K]?: V };
}

/** The embedded default model shipped in the repository. */
function defaultModelPath(): string {
  const embedded = embeddedModelPath();
  if (embedded) return embedded;
  throw new RedlineError('model_missing', 'No model given and no embedded default model is installed.',
    'Pass --model PATH: an SD 1.5 diffusers folder or a single-file .safetensors checkpoint (with --tokenizer DIR).');
}

