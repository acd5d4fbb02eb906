// The training run around the gradient step: dataset scan, latent cache, batches with
// caption edits, noise and timesteps from the run's RNG streams, gradient accumulation,
// AdamW with the lr schedule, checkpoints with exact resume, sample images, the loss log
// and curve, the kohya-format output (or a diffusers folder for full fine-tuning) and the
// intensity calibration written into the adapter's sidecar.
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { RedlineError } from '../../errors.ts';
import { openCheckpoint, type Checkpoint } from '../../models/checkpoint/load.ts';
import { OverlayWeightSource } from '../../models/checkpoint/weight-source.ts';
import { writeDiffusersFolder } from '../../models/checkpoint/write.ts';
import type { SessionOptions } from '../../runtime/session.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { loadTokenizer, resolveTokenizerDir, type ClipTokenizer } from '../../text/tokenizer.ts';
import { processCaption, tagFrequency } from '../data/captions.ts';
import type { TrainConfig } from '../data/config.ts';
import { type BatchRef, epochBatches, type ImageItem, scanDatasets } from '../data/dataset.ts';
import { LatentCache } from '../data/latents.ts';
import { RunRngs, TrainRng } from '../data/rng.ts';
import { AdamW, type AdamWState } from '../optim/adamw.ts';
import { lrAt, type Schedule, type ScheduleName } from '../optim/schedule.ts';
import { addNoise, buildLoraStep, buildUnetFullStep, initLoraParams, type LoraTarget, loraTargets, minSnrWeights, offsetNoise, sd15AlphasCumprod, type StepGraph, TrainStepSession, type UnetTargetSet } from '../step/index.ts';
import { CHECKPOINT_VERSION, loadCheckpoint, type RunCheckpoint, type RunPosition, saveCheckpoint } from './checkpoint.ts';
import { kohyaTensors, saveKohyaLora } from './kohya.ts';
import { LossLog, readLossLog, writeLossCurve } from './losslog.ts';

/** Step sessions by graph identity, so several runs in one process (tests, resume checks)
 * compile a step graph once. */
export class StepSessionCache {
  private readonly sessions = new Map<string, Promise<TrainStepSession>>();

  get(key: string, build: () => StepGraph, opts: SessionOptions): Promise<TrainStepSession> {
    let s = this.sessions.get(key);
    if (!s) {
      s = TrainStepSession.create(build(), opts);
      this.sessions.set(key, s);
    }
    return s;
  }

  async release(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
  }
}

export interface TrainEvents {
  /** After each optimizer step. */
  onStep?: (e: { step: number; total: number; loss: number; lr: number; stepsPerSecond: number }) => void;
  /** Phase messages (scanning, caching latents, saving, sampling, calibrating). */
  onMessage?: (msg: string) => void;
  /** After the latent cache is filled (count, seconds). */
  onLatents?: (done: number, total: number) => void;
}

export interface TrainRunOptions extends TrainEvents {
  /** A checkpoint folder (OUTPUT_DIR/checkpoints/step-N) to continue from. */
  resume?: string;
  /** Stop after this many optimizer steps, saving a checkpoint there (an interruption). */
  stopAtStep?: number;
  /** Stops after the current step, saving a checkpoint (Ctrl-C). */
  signal?: AbortSignal;
  sessionOptions?: SessionOptions;
  stepSessions?: StepSessionCache;
  /** Runs after training with the saved adapter (sampling, calibration: run/generate.ts). */
  afterTraining?: (ctx: AfterTrainingContext) => Promise<void>;
  /** Runs at sample steps with the adapter saved at that step. */
  onSample?: (ctx: SampleContext) => Promise<void>;
}

export interface SampleContext {
  step: number;
  adapterPath: string;
  config: TrainConfig;
}

export interface AfterTrainingContext {
  config: TrainConfig;
  adapterPath: string;
  /** Images held out of training for the calibration (intensity-tagged). */
  holdout: ImageItem[];
}

export interface TrainResult {
  /** The kohya LoRA file, or the diffusers folder of a fine-tune. */
  output: string;
  steps: number;
  /** Loss per optimizer step, from step 1 (resumed runs include the earlier rows). */
  losses: number[];
  stepsPerSecond: number;
  checkpoints: string[];
  interrupted: boolean;
  trainImages: number;
  holdout: ImageItem[];
  lossCsv: string;
  lossCurve: string;
}

const SCHEDULE_NAMES: Record<string, ScheduleName> = { constant: 'constant', constant_with_warmup: 'constant_with_warmup', linear: 'linear', cosine: 'cosine', cosine_with_restarts: 'cosine_with_restarts' };

function unetTargetSet(cfg: TrainConfig): UnetTargetSet {
  if (cfg.networkTarget === 'attention+ff+conv') return 'transformer+conv';
  return cfg.networkTarget === 'attention' ? 'attention' : 'transformer';
}

/** Everything that must stay the same between a run and its resume. */
function settingsDigest(cfg: TrainConfig, items: ImageItem[]): string {
  const s = {
    mode: cfg.mode, model: cfg.pretrainedModel, dim: cfg.networkDim, alpha: cfg.networkAlpha, target: cfg.networkTarget, unetOnly: cfg.trainUnetOnly,
    lr: [cfg.learningRate, cfg.unetLr, cfg.textEncoderLr, cfg.lrScheduler, cfg.lrWarmupSteps, cfg.lrSchedulerNumCycles], steps: cfg.maxTrainSteps,
    accum: cfg.gradientAccumulationSteps, snr: cfg.minSnrGamma, offset: cfg.noiseOffset, prior: cfg.priorLossWeight, seed: cfg.seed,
    opt: [cfg.weightDecay, cfg.betas, cfg.adamEps], clip: cfg.clipSkip, datasets: cfg.datasets.map((d) => ({ ...d, subsets: d.subsets.map((x) => ({ ...x })) })),
    items: items.map((i) => [i.path, i.caption, i.bucket, i.repeats]),
  };
  return createHash('sha256').update(JSON.stringify(s)).digest('hex').slice(0, 16);
}

/** Intensity-tagged images set aside for the calibration: the last N per level (by path). */
function splitHoldout(cfg: TrainConfig, items: ImageItem[]): { train: ImageItem[]; holdout: ImageItem[] } {
  if (!cfg.calibration || cfg.mode !== 'lora') return { train: items, holdout: [] };
  const tagged = items.filter((i) => i.intensity !== null && !i.isReg);
  if (!tagged.length) throw new RedlineError('train_config', 'A [calibration] table needs captions with intensity:N tags; none were found.', 'Tag the captions (intensity:0..3) or remove [calibration].');
  const present = new Set(tagged.map((i) => i.intensity!));
  const missing = [1, 2, 3].filter((l) => !present.has(l));
  if (missing.length) {
    throw new RedlineError('dataset_too_small', `The calibration needs images of every intensity level 1 to 3; none are tagged ${missing.map((l) => `intensity:${l}`).join(', ')}.`, 'The policy maps each of levels 1-3 to a strength: tag images of each level, or remove [calibration].');
  }
  const holdout: ImageItem[] = [];
  for (const level of [...present].sort()) {
    const of = tagged.filter((i) => i.intensity === level).sort((a, b) => (a.path < b.path ? -1 : 1));
    if (of.length <= cfg.calibration.holdoutPerLevel) {
      throw new RedlineError('dataset_too_small', `Intensity level ${level} has ${of.length} image(s); holding out ${cfg.calibration.holdoutPerLevel} for the calibration would leave none to train on.`, 'Add images of that level or lower holdout_per_level.');
    }
    holdout.push(...of.slice(-cfg.calibration.holdoutPerLevel));
  }
  return { train: items.filter((i) => !holdout.includes(i)), holdout };
}

function tokenizerFor(ck: Checkpoint, modelPath: string): ClipTokenizer {
  return loadTokenizer(ck.tokenizerDir ?? resolveTokenizerDir({ modelPath }));
}

interface Group {
  name: 'unet' | 'text_encoder';
  opt: AdamW;
  schedule: Schedule;
}

export async function train(cfg: TrainConfig, opts: TrainRunOptions = {}): Promise<TrainResult> {
  const say = opts.onMessage ?? (() => {});
  mkdirSync(cfg.outputDir, { recursive: true });
  const ckpt = openCheckpoint(cfg.pretrainedModel);
  const ownsSessions = !opts.stepSessions;
  const sessions = opts.stepSessions ?? new StepSessionCache();
  try {
    say('scanning the dataset');
    const all = await scanDatasets(cfg.datasets);
    const { train: items, holdout } = splitHoldout(cfg, all);
    const tokenizer = tokenizerFor(ckpt, cfg.pretrainedModel);
    const scaling = (ckpt.configs.vae.scaling_factor as number | undefined) ?? 0.18215;

    say(`caching latents of ${items.length} images`);
    const latents = new LatentCache(ckpt, cfg.cacheLatentsToDisk ? join(cfg.outputDir, 'latent-cache') : null, opts.sessionOptions);
    await latents.fill(items, opts.onLatents);

    // trainable tensors and their step graph
    let targets: LoraTarget[] = [];
    let params: Map<string, Float32Array>;
    let stepKey: string;
    let build: () => StepGraph;
    const stepOpts = { lossWeights: true, clipSkip: cfg.clipSkip, textEncoder: 'in-graph' as const, checkpoint: cfg.gradientCheckpointing ? ('blocks' as const) : ('none' as const) };
    if (cfg.mode === 'lora') {
      targets = loraTargets(ckpt, { unet: unetTargetSet(cfg), textEncoder: !cfg.trainUnetOnly, rank: cfg.networkDim, alpha: cfg.networkAlpha });
      params = initLoraParams(targets, cfg.seed);
      stepKey = `lora|${cfg.pretrainedModel}|${targets.map((t) => `${t.key}:${t.rank}:${t.alpha}`).join(',')}|${cfg.clipSkip}|${stepOpts.checkpoint}`;
      build = () => buildLoraStep(ckpt, targets, stepOpts);
    } else {
      params = new Map();
      const unet = ckpt.components.unet;
      for (const n of unet.names()) params.set(`unet.${n}`, new Float32Array(unet.get(n).toFloat32()));
      stepKey = `full|${cfg.pretrainedModel}|${cfg.clipSkip}|${stepOpts.checkpoint}`;
      build = () => buildUnetFullStep(ckpt, stepOpts);
    }
    say('building the training step');
    const step = await sessions.get(stepKey, build, opts.sessionOptions ?? {});

    // optimizer groups: kohya's unet_lr / text_encoder_lr default to learning_rate
    const groups: Group[] = [];
    for (const name of ['unet', 'text_encoder'] as const) {
      const mine = new Map([...params].filter(([k]) => k.startsWith(`${name}.`)));
      if (!mine.size) continue;
      const lr = (name === 'unet' ? cfg.unetLr : cfg.textEncoderLr) ?? cfg.learningRate;
      const schedule: Schedule = { name: SCHEDULE_NAMES[cfg.lrScheduler]!, lr, warmupSteps: cfg.lrWarmupSteps, totalSteps: cfg.maxTrainSteps, cycles: cfg.lrSchedulerNumCycles };
      groups.push({ name, opt: new AdamW(mine, { lr, betas: cfg.betas, eps: cfg.adamEps, weightDecay: cfg.weightDecay }), schedule });
    }

    const rngs = new RunRngs(cfg.seed);
    const digest = settingsDigest(cfg, items);
    let position: RunPosition;
    let startedAt = Date.now() / 1000;
    let elapsedBefore = 0;
    let batches: BatchRef[];
    if (opts.resume) {
      const loaded = loadCheckpoint(opts.resume);
      if (loaded.state.settingsDigest !== digest) {
        throw new RedlineError('train_resume', `${opts.resume} was saved by a run with other settings or data.`, 'Resume with the config and dataset that made it, or start a new run.');
      }
      for (const [k, v] of params) {
        const saved = loaded.params.get(k);
        if (!saved || saved.length !== v.length) throw new RedlineError('train_resume', `${opts.resume} has no values for ${k}.`);
        v.set(saved);
      }
      for (const g of groups) {
        const s = loaded.optimizers[g.name];
        if (!s) throw new RedlineError('train_resume', `${opts.resume} has no optimizer state for the ${g.name} group.`);
        g.opt.loadStateDict(s);
      }
      rngs.restore(loaded.state.rng);
      position = loaded.state.position;
      startedAt = loaded.state.trainingStartedAt;
      elapsedBefore = loaded.state.elapsedSeconds;
      batches = epochBatches(cfg.datasets, items, TrainRng.fromState(position.epochOrderState));
      say(`resuming at step ${position.step}`);
    } else {
      const epochOrderState = rngs.order.state();
      batches = epochBatches(cfg.datasets, items, rngs.order);
      position = { step: 0, epoch: 0, batchIndex: 0, epochOrderState };
    }

    const lossCsv = join(cfg.outputDir, `${cfg.outputName}-loss.csv`);
    const lossLog = new LossLog(lossCsv, position.step);
    const ac = sd15AlphasCumprod();
    const checkpoints: string[] = [];
    const ssBase = { startedAt, sessionId: randomUUID() };
    const t0 = Date.now();
    const firstStep = position.step;
    let interrupted = false;

    const nextBatch = (): BatchRef => {
      if (position.batchIndex >= batches.length) {
        position.epoch++;
        position.epochOrderState = rngs.order.state();
        batches = epochBatches(cfg.datasets, items, rngs.order);
        position.batchIndex = 0;
      }
      return batches[position.batchIndex++]!;
    };

    const checkpointNow = (): string => {
      const dir = join(cfg.outputDir, 'checkpoints', `step-${String(position.step).padStart(6, '0')}`);
      const state: RunCheckpoint = {
        version: CHECKPOINT_VERSION,
        position: { ...position },
        rng: rngs.state(),
        optimizerSteps: Object.fromEntries(groups.map((g) => [g.name, g.opt.stepCount])),
        settingsDigest: digest,
        trainingStartedAt: startedAt,
        elapsedSeconds: elapsedBefore + (Date.now() - t0) / 1000,
      };
      const optStates: Record<string, AdamWState> = Object.fromEntries(groups.map((g) => [g.name, g.opt.stateDict()]));
      saveCheckpoint(dir, state, params, optStates);
      checkpoints.push(dir);
      return dir;
    };

    const saveOutput = async (path: string, steps: number): Promise<void> => {
      if (cfg.mode !== 'lora') return;
      const meta = kohyaMetadata(cfg, items, steps, position.epoch, ssBase, ckpt);
      await saveKohyaLora(path, kohyaTensors(targets, params), meta, { category: cfg.category });
    };

    while (position.step < cfg.maxTrainSteps) {
      const lrNow = groups.map((g) => lrAt(g.schedule, position.step));
      const sum = new Map<string, Float32Array>();
      let lossSum = 0;
      for (let micro = 0; micro < cfg.gradientAccumulationSteps; micro++) {
        const batch = nextBatch();
        const B = batch.items.length;
        const [w, h] = [batch.bucket[0] / 8, batch.bucket[1] / 8];
        const per = 4 * h * w;
        const x0 = new Float32Array(B * per);
        batch.items.forEach((it, i) => {
          const l = latents.get(it).mean;
          for (let k = 0; k < per; k++) x0[i * per + k] = l[k]! * scaling;
        });
        const ids = batch.items.map((it) => tokenizer.encodePadded(processCaption(it.caption, it.subset, rngs.caption)));
        let noise = rngs.noise.fillNormal(new Float32Array(B * per));
        if (cfg.noiseOffset > 0) noise = offsetNoise(noise, rngs.noise.fillNormal(new Float32Array(B * 4)), cfg.noiseOffset);
        const timesteps = batch.items.map(() => rngs.timestep.int(1000));
        const weights = cfg.minSnrGamma !== null ? minSnrWeights(timesteps, cfg.minSnrGamma, ac) : new Float32Array(B).fill(1);
        batch.items.forEach((it, i) => {
          if (it.isReg) weights[i] = Math.fround(weights[i]! * cfg.priorLossWeight);
        });
        const r = await step.run({ noisyLatents: addNoise(x0, noise, timesteps, ac), timesteps, inputIds: ids, target: noise, lossWeights: weights, latentSize: [h, w] }, params);
        lossSum += r.loss;
        for (const [k, g] of r.grads) {
          if (!params.has(k)) continue;
          const acc = sum.get(k);
          if (!acc) sum.set(k, cfg.gradientAccumulationSteps === 1 ? g : Float32Array.from(g, (v) => v / cfg.gradientAccumulationSteps));
          else for (let i = 0; i < g.length; i++) acc[i] = acc[i]! + g[i]! / cfg.gradientAccumulationSteps;
        }
      }
      groups.forEach((g, i) => g.opt.step(sum, lrNow[i]));
      position.step++;
      const loss = lossSum / cfg.gradientAccumulationSteps;
      const elapsed = (Date.now() - t0) / 1000;
      lossLog.append({ step: position.step, loss, lr: lrNow[0]!, epoch: position.epoch, elapsed: elapsedBefore + elapsed });
      opts.onStep?.({ step: position.step, total: cfg.maxTrainSteps, loss, lr: lrNow[0]!, stepsPerSecond: (position.step - firstStep) / Math.max(elapsed, 1e-9) });

      const last = position.step === cfg.maxTrainSteps;
      const stopping = position.step === opts.stopAtStep || !!opts.signal?.aborted;
      if ((cfg.saveEveryNSteps && position.step % cfg.saveEveryNSteps === 0 && !last) || (stopping && !last)) {
        const dir = checkpointNow();
        if (cfg.mode === 'lora') await saveOutput(join(cfg.outputDir, `${cfg.outputName}-step${String(position.step).padStart(8, '0')}.safetensors`), position.step);
        say(`checkpoint ${dir}`);
      }
      if (cfg.sampleEveryNSteps && position.step % cfg.sampleEveryNSteps === 0 && cfg.samplePrompts.length && opts.onSample && cfg.mode === 'lora' && !last) {
        const dir = join(cfg.outputDir, 'samples');
        mkdirSync(dir, { recursive: true });
        const p = join(dir, `adapter-step${String(position.step).padStart(8, '0')}.safetensors`);
        await saveOutput(p, position.step);
        await opts.onSample({ step: position.step, adapterPath: p, config: cfg });
      }
      if (stopping && !last) {
        interrupted = true;
        break;
      }
    }

    const stepsPerSecond = (position.step - firstStep) / Math.max((Date.now() - t0) / 1000, 1e-9);
    const rows = readLossLog(lossCsv);
    const lossCurve = join(cfg.outputDir, `${cfg.outputName}-loss.png`);
    await writeLossCurve(lossCurve, rows, `${cfg.outputName}: loss per step (red: moving average)`);
    let output = join(cfg.outputDir, cfg.mode === 'lora' ? `${cfg.outputName}.safetensors` : cfg.outputName);
    if (!interrupted) {
      if (cfg.mode === 'lora') {
        await saveOutput(output, position.step);
        if (cfg.sampleEveryNSteps && cfg.samplePrompts.length && opts.onSample) await opts.onSample({ step: position.step, adapterPath: output, config: cfg });
        if (opts.afterTraining) await opts.afterTraining({ config: cfg, adapterPath: output, holdout });
      } else {
        say(`writing the fine-tuned model to ${output}`);
        const overrides = new Map<string, Tensor>();
        for (const [k, v] of params) overrides.set(k.slice('unet.'.length), new Tensor('f32', ckpt.components.unet.shape(k.slice('unet.'.length)), v));
        rmSync(output, { recursive: true, force: true });
        writeDiffusersFolder(output, { ...ckpt.components, unet: new OverlayWeightSource(ckpt.components.unet, overrides) }, ckpt.configs, { tokenizerDir: ckpt.tokenizerDir, metadata: { redline_training_steps: String(position.step) } });
      }
    } else {
      output = checkpoints[checkpoints.length - 1]!;
    }
    return { output, steps: position.step, losses: rows.map((r) => r.loss), stepsPerSecond, checkpoints, interrupted, trainImages: items.length, holdout, lossCsv, lossCurve };
  } finally {
    if (ownsSessions) await sessions.release();
    ckpt.close();
  }
}

/** kohya train_network.py's ss_* metadata for this run (values as kohya writes them:
 * strings, Python-style tuples and booleans, JSON for the dataset tables). */
export function kohyaMetadata(cfg: TrainConfig, items: ImageItem[], steps: number, epoch: number, run: { startedAt: number; sessionId: string }, ckpt: Checkpoint): Record<string, string> {
  const train = items.filter((i) => !i.isReg);
  const reg = items.filter((i) => i.isReg);
  const byDir = (list: ImageItem[]): Record<string, { n_repeats: number; img_count: number }> => {
    const out: Record<string, { n_repeats: number; img_count: number }> = {};
    for (const it of list) {
      const d = basename(it.subset.imageDir);
      out[d] ??= { n_repeats: it.subset.numRepeats, img_count: 0 };
      out[d].img_count++;
    }
    return out;
  };
  const tags: Record<string, Record<string, number>> = {};
  for (const it of train) {
    const d = basename(it.subset.imageDir);
    const f = tagFrequency([it.caption]);
    tags[d] ??= {};
    for (const [t, n] of Object.entries(f)) tags[d][t] = (tags[d][t] ?? 0) + n;
  }
  const buckets: Record<string, { resolution: [number, number]; count: number }> = {};
  for (const it of items) {
    const k = it.bucket.join('x');
    buckets[k] ??= { resolution: [it.bucket[0], it.bucket[1]], count: 0 };
    buckets[k].count += it.repeats;
  }
  const d0 = cfg.datasets[0]!;
  const py = (b: boolean): string => (b ? 'True' : 'False');
  const batchesPerEpoch = cfg.datasets.reduce((n, d, di) => {
    const per = new Map<string, number>();
    for (const it of items) if (it.dataset === di) per.set(it.bucket.join('x'), (per.get(it.bucket.join('x')) ?? 0) + it.repeats);
    return n + [...per.values()].reduce((m, c) => m + Math.ceil(c / d.batchSize), 0);
  }, 0);
  return {
    ss_session_id: run.sessionId,
    ss_training_started_at: String(run.startedAt),
    ss_training_finished_at: String(Date.now() / 1000),
    ss_output_name: cfg.outputName,
    ss_learning_rate: String(cfg.learningRate),
    ss_unet_lr: String(cfg.unetLr ?? cfg.learningRate),
    ss_text_encoder_lr: String(cfg.trainUnetOnly ? 0 : (cfg.textEncoderLr ?? cfg.learningRate)),
    ss_num_train_images: String(train.reduce((n, i) => n + i.repeats, 0)),
    ss_num_reg_images: String(reg.reduce((n, i) => n + i.repeats, 0)),
    ss_num_batches_per_epoch: String(batchesPerEpoch),
    ss_num_epochs: String(epoch + 1),
    ss_epoch: String(epoch + 1),
    ss_steps: String(steps),
    ss_max_train_steps: String(cfg.maxTrainSteps),
    ss_gradient_accumulation_steps: String(cfg.gradientAccumulationSteps),
    ss_gradient_checkpointing: py(cfg.gradientCheckpointing),
    ss_lr_warmup_steps: String(cfg.lrWarmupSteps),
    ss_lr_scheduler: cfg.lrScheduler,
    ss_network_module: 'networks.lora',
    ss_network_dim: String(cfg.networkDim),
    ss_network_alpha: String(cfg.networkAlpha),
    ss_network_args: JSON.stringify({ redline_target: cfg.networkTarget, ...(cfg.networkTarget === 'attention+ff+conv' ? { conv_dim: String(cfg.networkDim), conv_alpha: String(cfg.networkAlpha) } : {}) }),
    ss_mixed_precision: 'no',
    ss_full_fp16: 'False',
    ss_v2: 'False',
    ss_base_model_version: 'sd_v1',
    ss_sd_model_name: basename(cfg.pretrainedModel),
    ss_clip_skip: String(cfg.clipSkip),
    ss_max_token_length: 'None',
    ss_cache_latents: 'True',
    ss_seed: String(cfg.seed),
    ss_noise_offset: String(cfg.noiseOffset),
    ss_min_snr_gamma: cfg.minSnrGamma === null ? 'None' : String(cfg.minSnrGamma),
    ss_prior_loss_weight: String(cfg.priorLossWeight),
    ss_optimizer: `torch.optim.adamw.AdamW(weight_decay=${cfg.weightDecay},betas=(${cfg.betas.join(', ')}),eps=${cfg.adamEps})`,
    ss_caption_dropout_rate: String(d0.subsets[0]!.captionDropoutRate),
    ss_caption_tag_dropout_rate: String(d0.subsets[0]!.captionTagDropoutRate),
    ss_keep_tokens: String(d0.subsets[0]!.keepTokens),
    ss_shuffle_caption: py(d0.subsets[0]!.shuffleCaption),
    ss_resolution: `(${d0.resolution[0]}, ${d0.resolution[1]})`,
    ss_enable_bucket: py(d0.enableBucket),
    ss_min_bucket_reso: String(d0.minBucketReso),
    ss_max_bucket_reso: String(d0.maxBucketReso),
    ss_bucket_no_upscale: py(d0.bucketNoUpscale),
    ss_batch_size_per_device: String(d0.batchSize),
    ss_total_batch_size: String(d0.batchSize * cfg.gradientAccumulationSteps),
    ss_dataset_dirs: JSON.stringify(byDir(train)),
    ss_reg_dataset_dirs: JSON.stringify(byDir(reg)),
    ss_tag_frequency: JSON.stringify(tags),
    ss_bucket_info: JSON.stringify({ buckets }),
    ss_training_comment: `trained by Redline from ${basename(ckpt.path)}`,
  };
}

/** Checkpoint folders of a run, oldest first. */
export function listCheckpoints(outputDir: string): string[] {
  const dir = join(outputDir, 'checkpoints');
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((n) => /^step-\d+$/.test(n)).sort().map((n) => join(dir, n));
}
