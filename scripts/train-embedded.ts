// Trains the embedded default model (models/redline-tiny) from scratch, from the committed
// recipe (recipes/redline-tiny/model.json: architecture, train.json: data, steps, seeds):
//   1. a BPE tokenizer on the training captions,
//   2. the VAE (as a regularised autoencoder on whole scenes drawn at a small size),
//   3. text encoder + UNet together on the VAE latents (epsilon prediction, DDPM noise),
//   4. export as a diffusers folder with fp16 safetensors.
// Every random draw comes from seeded generators, so the same recipe gives the same weights
// on the same ONNX Runtime provider and thread count.
//   npx tsx scripts/train-embedded.ts [--out models/redline-tiny] [--work DIR] [--from vae|diffusion|export]
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { exportOnnx } from '../src/graph/onnx.ts';
import { keyMapFor, type Component } from '../src/models/checkpoint/sd15-keymap.ts';
import { TensorMapSource } from '../src/models/checkpoint/weight-source.ts';
import { writeDiffusersFolder } from '../src/models/checkpoint/write.ts';
import { buildVaeEncoder } from '../src/models/vae.ts';
import { Session } from '../src/runtime/session.ts';
import { readSafetensors, writeSafetensors } from '../src/tensor/safetensors.ts';
import { Tensor } from '../src/tensor/tensor.ts';
import { trainBpe, writeBpeVocabulary } from '../src/text/bpe-trainer.ts';
import { loadTokenizer } from '../src/text/tokenizer.ts';
import { AdamW } from '../src/train/optim/adamw.ts';
import { SeededRandom } from '../src/train/procedural/random.ts';
import { captionOf, renderScene } from '../src/train/procedural/scenes.ts';
import { readRecipe, trainingScenes } from './embedded-recipe.ts';
import { initComponent, initVaeAsBlockAverage } from '../src/train/run/init-weights.ts';
import { buildAutoencoderStep, buildTextUnetStep } from '../src/train/run/scratch-steps.ts';
import { addNoise, minSnrWeights, sd15AlphasCumprod } from '../src/train/step/noise.ts';

const { values } = parseArgs({
  options: {
    recipe: { type: 'string', default: 'recipes/redline-tiny' },
    out: { type: 'string', default: 'models/redline-tiny' },
    work: { type: 'string', default: '.cache/redline-tiny-train' },
    from: { type: 'string', default: 'tokenizer' },
  },
});
const PHASES = ['tokenizer', 'vae', 'diffusion', 'export'];
const startAt = PHASES.indexOf(values.from!);
if (startAt < 0) throw new Error(`--from must be one of ${PHASES.join(', ')}`);
const { configs, recipe } = readRecipe(values.recipe!);
const work = values.work!;
mkdirSync(work, { recursive: true });
const log = (msg: string): void => console.error(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

function gaussian(rng: SeededRandom): () => number {
  return () => Math.sqrt(-2 * Math.log(Math.max(rng.next(), 1e-12))) * Math.cos(2 * Math.PI * rng.next());
}

function toChw(rgb: Uint8Array, size: number): Float32Array {
  const n = size * size;
  const out = new Float32Array(3 * n);
  for (let i = 0; i < n; i++) for (let c = 0; c < 3; c++) out[c * n + i] = rgb[i * 3 + c]! / 127.5 - 1;
  return out;
}

function source(component: Component, w: Map<string, Float32Array>): TensorMapSource {
  return new TensorMapSource(new Map(keyMapFor(component, configs[component]).map((e) => [e.diffusers, new Tensor('f32', e.shape, w.get(e.diffusers)!)])));
}

function saveF32(path: string, w: Map<string, Float32Array>, component: Component, meta: Record<string, string> = {}): void {
  const t = new Map(keyMapFor(component, configs[component]).map((e) => [e.diffusers, new Tensor('f32', e.shape, w.get(e.diffusers)!)]));
  writeSafetensors(path, t, meta);
}

function loadF32(path: string): Map<string, Float32Array> {
  return new Map([...readSafetensors(path)].map(([k, v]) => [k, v.toFloat32()]));
}

function lrAt(base: number, warmup: number, step: number, total: number): number {
  // linear warmup, then cosine decay to 10% (small-batch from-scratch runs settle better)
  if (step < warmup) return (base * (step + 1)) / warmup;
  const p = (step - warmup) / Math.max(1, total - warmup);
  return base * (0.1 + 0.45 * (1 + Math.cos(Math.PI * p)));
}

const scenes = trainingScenes(recipe);
const size = recipe.dataset.size;
const captions = scenes.map((s) => captionOf(s));
const tokDir = join(work, 'tokenizer');

// ---- 1. tokenizer
if (startAt <= 0) {
  const v = trainBpe(captions, recipe.tokenizer);
  writeBpeVocabulary(tokDir, v);
  log(`tokenizer: ${v.merges.length} merges`);
}

// ---- 2. VAE
const vaePath = join(work, 'vae.safetensors');
let images: Float32Array[] | null = null;
const imagesOf = (): Float32Array[] => (images ??= scenes.map((s) => toChw(renderScene(s, size, size), size)));
if (startAt <= 1) {
  const { steps, batch, imageSize: crop, lr, warmup, latentPenalty, init } = recipe.vae;
  const weights = initComponent('vae', configs, recipe.seed + 1);
  if (init === 'block-average') initVaeAsBlockAverage(weights, configs.vae);
  const step = buildAutoencoderStep(configs, source('vae', weights), latentPenalty, batch, crop);
  const session = await Session.create(exportOnnx(step.graph));
  const params = new Map(step.params.map((p) => [p.name, weights.get(p.name.slice('vae.'.length))!]));
  const opt = new AdamW(params, { lr, weightDecay: 0 });
  const rng = new SeededRandom(recipe.seed + 2);
  // Whole scenes drawn at the small training size, not crops of the 128px images: group
  // norm and the mid-block attention see whole images at generation time, and crops (mostly
  // background) gave them other statistics.
  const small = scenes.map((s) => toChw(renderScene(s, crop, crop), crop));
  const t0 = performance.now();
  let avg = 0;
  for (let i = 0; i < steps; i++) {
    const x = new Float32Array(batch * 3 * crop * crop);
    for (let b = 0; b < batch; b++) x.set(small[rng.int(0, small.length)]!, b * 3 * crop * crop);
    const feeds: Record<string, ort.Tensor> = { image: new ort.Tensor('float32', x, [batch, 3, crop, crop]) };
    for (const p of step.params) feeds[p.name] = new ort.Tensor('float32', params.get(p.name)!, p.shape);
    const out = await session.ort.run(feeds);
    const grads = new Map(step.params.map((p) => [p.name, out[`grad.${p.name}`]!.data as Float32Array]));
    opt.step(grads, lrAt(lr, warmup, i, steps));
    const loss = Number((out.loss!.data as Float32Array)[0]);
    avg = i === 0 ? loss : 0.95 * avg + 0.05 * loss;
    if ((i + 1) % 20 === 0 || i === steps - 1) log(`vae ${i + 1}/${steps} loss ${avg.toFixed(4)} ${((i + 1) / ((performance.now() - t0) / 1000)).toFixed(2)} step/s`);
  }
  await session.release();
  // The encoder was trained on its mean; its log-variance half is fixed near zero variance
  // so img2img's sampling from the posterior stays at the trained mean.
  const z = configs.vae.latent_channels;
  const qw = weights.get('quant_conv.weight')!;
  const qb = weights.get('quant_conv.bias')!;
  qw.fill(0, z * 2 * z);
  qb.fill(-10, z);
  saveF32(vaePath, weights, 'vae');
}

// ---- latents of the training set at full size, and the scaling factor (1 / std)
const latentPath = join(work, 'latents.safetensors');
if (startAt <= 2) {
  const vae = loadF32(vaePath);
  const enc = await Session.create(exportOnnx(buildVaeEncoder(configs.vae, source('vae', vae))));
  const imgs = imagesOf();
  const h = size / 8;
  const per = configs.vae.latent_channels * h * h;
  const all = new Float32Array(imgs.length * per);
  for (let i = 0; i < imgs.length; i += 32) {
    const n = Math.min(32, imgs.length - i);
    const x = new Float32Array(n * 3 * size * size);
    for (let b = 0; b < n; b++) x.set(imgs[i + b]!, b * 3 * size * size);
    const out = await enc.ort.run({ image: new ort.Tensor('float32', x, [n, 3, size, size]) });
    all.set(out.mean!.data as Float32Array, i * per);
  }
  await enc.release();
  let s = 0;
  let s2 = 0;
  for (const v of all) {
    s += v;
    s2 += v * v;
  }
  const std = Math.sqrt(s2 / all.length - (s / all.length) ** 2);
  writeSafetensors(latentPath, new Map([['latents', new Tensor('f32', [imgs.length, configs.vae.latent_channels, h, h], all)]]), { scaling_factor: String(Math.fround(1 / std)) });
  log(`latents: ${imgs.length} encoded, std ${std.toFixed(4)}`);
}

// ---- 3. text encoder + UNet
const diffPath = join(work, 'diffusion.safetensors');
if (startAt <= 2) {
  const { steps, batch, lr, warmup, captionDropout, minSnrGamma } = recipe.diffusion;
  const tokenizer = loadTokenizer(tokDir);
  const latFile = readSafetensors(latentPath);
  const latents = latFile.get('latents')!.data as Float32Array;
  const scaling = Number(readMeta(latentPath).scaling_factor);
  const te = initComponent('text_encoder', configs, recipe.seed + 3);
  const unet = initComponent('unet', configs, recipe.seed + 4);
  const step = buildTextUnetStep(configs, { unet: source('unet', unet), text_encoder: source('text_encoder', te) }, { lossWeights: minSnrGamma !== undefined });
  const session = await Session.create(exportOnnx(step.graph));
  const params = new Map(step.params.map((p) => {
    const [c, ...rest] = p.name.split('.');
    return [p.name, (c === 'unet' ? unet : te).get(rest.join('.'))!];
  }));
  const opt = new AdamW(params, { lr, weightDecay: 1e-2 });
  const rng = new SeededRandom(recipe.seed + 5);
  const randn = gaussian(new SeededRandom(recipe.seed + 6));
  const ac = sd15AlphasCumprod();
  const h = size / 8;
  const per = configs.vae.latent_channels * h * h;
  const ids = captions.map((c) => tokenizer.encodePadded(c));
  const empty = tokenizer.encodePadded('');
  const t0 = performance.now();
  let avg = 0;
  for (let i = 0; i < steps; i++) {
    const x0 = new Float32Array(batch * per);
    const rows: number[][] = [];
    const t: number[] = [];
    for (let b = 0; b < batch; b++) {
      const k = rng.int(0, scenes.length);
      for (let j = 0; j < per; j++) x0[b * per + j] = latents[k * per + j]! * scaling;
      rows.push(rng.next() < captionDropout ? empty : ids[k]!);
      t.push(rng.int(0, 1000));
    }
    const noise = Float32Array.from({ length: batch * per }, randn);
    const noisy = addNoise(x0, noise, t, ac);
    const feeds: Record<string, ort.Tensor> = {
      noisy_latents: new ort.Tensor('float32', noisy, [batch, 4, h, h]),
      timestep: new ort.Tensor('float32', Float32Array.from(t), [batch]),
      input_ids: new ort.Tensor('int64', BigInt64Array.from(rows.flat().map(BigInt)), [batch, 77]),
      target: new ort.Tensor('float32', noise, [batch, 4, h, h]),
      ...(minSnrGamma !== undefined ? { loss_weights: new ort.Tensor('float32', minSnrWeights(t, minSnrGamma, ac), [batch]) } : {}),
    };
    for (const p of step.params) feeds[p.name] = new ort.Tensor('float32', params.get(p.name)!, p.shape);
    const out = await session.ort.run(feeds);
    const grads = new Map(step.params.map((p) => [p.name, out[`grad.${p.name}`]!.data as Float32Array]));
    opt.step(grads, lrAt(lr, warmup, i, steps));
    const loss = Number((out.loss!.data as Float32Array)[0]);
    avg = i === 0 ? loss : 0.97 * avg + 0.03 * loss;
    if ((i + 1) % 20 === 0 || i === steps - 1) log(`diffusion ${i + 1}/${steps} loss ${avg.toFixed(4)} ${((i + 1) / ((performance.now() - t0) / 1000)).toFixed(2)} step/s`);
    if ((i + 1) % 100 === 0 || i === steps - 1) {
      saveF32(join(work, 'text_encoder.safetensors'), te, 'text_encoder');
      saveF32(diffPath, unet, 'unet', { step: String(i + 1) });
    }
  }
  await session.release();
}

function readMeta(path: string): Record<string, string> {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  return (JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as { __metadata__?: Record<string, string> }).__metadata__ ?? {};
}

// ---- 4. export
{
  const scaling = Number(readMeta(latentPath).scaling_factor);
  const cfg = structuredClone(configs);
  cfg.vae.scaling_factor = scaling;
  const out = values.out!;
  if (existsSync(out)) for (const c of ['unet', 'vae', 'text_encoder', 'scheduler', 'tokenizer', 'model_index.json']) rmSync(join(out, c), { recursive: true, force: true });
  writeDiffusersFolder(out, {
    unet: source('unet', loadF32(diffPath)),
    vae: source('vae', loadF32(vaePath)),
    text_encoder: source('text_encoder', loadF32(join(work, 'text_encoder.safetensors'))),
  }, cfg, { dtype: 'f16', tokenizerDir: tokDir, metadata: { redline_recipe: 'recipes/redline-tiny' } });
  writeFileSync(join(work, 'done.json'), JSON.stringify({ scaling_factor: scaling }));
  log(`exported ${out}`);
}
