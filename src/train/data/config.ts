// The training config: one TOML file in kohya sd-scripts' shapes. Dataset keys follow
// kohya's dataset config ([general] / [[datasets]] / [[datasets.subsets]], or
// train_data_dir / reg_data_dir folders named N_name); training keys use kohya's argument
// names, in a [training] table or in kohya's own config-file sections, which are merged as
// kohya merges them. Keys that change nothing here (xformers, worker counts) are accepted and
// listed; keys that would change training in a way Redline does not implement are refused.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import { SIDECAR_CATEGORIES, sidecarCategoryProblem } from '../../adapters/registry.ts';
import { RedlineError } from '../../errors.ts';
import type { Reso } from './buckets.ts';

export type NetworkTarget = 'attention' | 'attention+ff' | 'attention+ff+conv';
export type LrScheduler = 'constant' | 'constant_with_warmup' | 'linear' | 'cosine' | 'cosine_with_restarts';
export const LR_SCHEDULERS: readonly LrScheduler[] = ['constant', 'constant_with_warmup', 'linear', 'cosine', 'cosine_with_restarts'];

export interface SubsetConfig {
  imageDir: string;
  numRepeats: number;
  captionExtension: string;
  shuffleCaption: boolean;
  keepTokens: number;
  captionDropoutRate: number;
  captionTagDropoutRate: number;
  isReg: boolean;
  /** kohya DreamBooth: the caption of images without a caption file (from N_name folders). */
  classTokens: string | null;
}

export interface DatasetConfig {
  resolution: Reso;
  batchSize: number;
  enableBucket: boolean;
  minBucketReso: number;
  maxBucketReso: number;
  bucketResoSteps: number;
  bucketNoUpscale: boolean;
  subsets: SubsetConfig[];
}

export interface CalibrationConfig {
  /** Intensity-tagged images per level held out of training; their captions are the prompts. */
  holdoutPerLevel: number;
  strengths: number[];
  effect: 'splatter_coverage';
  steps: number;
  cfgScale: number;
  sampler: string;
  seed: number;
}

export interface TrainConfig {
  /** The config file (paths in it are relative to its folder). */
  file: string;
  mode: 'lora' | 'fine_tune';
  pretrainedModel: string;
  outputDir: string;
  outputName: string;
  networkDim: number;
  networkAlpha: number;
  networkTarget: NetworkTarget;
  trainUnetOnly: boolean;
  learningRate: number;
  unetLr: number | null;
  textEncoderLr: number | null;
  lrScheduler: LrScheduler;
  lrWarmupSteps: number;
  lrSchedulerNumCycles: number;
  maxTrainSteps: number;
  gradientAccumulationSteps: number;
  minSnrGamma: number | null;
  noiseOffset: number;
  priorLossWeight: number;
  seed: number;
  saveEveryNSteps: number | null;
  sampleEveryNSteps: number | null;
  samplePrompts: string[];
  sampleSampler: string;
  sampleSteps: number;
  sampleCfgScale: number;
  sampleSize: Reso | null;
  weightDecay: number;
  betas: [number, number];
  adamEps: number;
  clipSkip: number;
  cacheLatentsToDisk: boolean;
  /** Recompute UNet block activations in the backward pass (less memory, more time). */
  gradientCheckpointing: boolean;
  /** Category written into the adapter's sidecar and its redline.category metadata (one of
   * the registry's SIDECAR_CATEGORIES, e.g. "graphic-injury"). */
  category: string | null;
  calibration: CalibrationConfig | null;
  datasets: DatasetConfig[];
  /** kohya keys that were accepted but change nothing in Redline. */
  ignoredKeys: string[];
}

type Table = Record<string, unknown>;

/** kohya's training config-file sections; read_config_from_file merges them all. */
const KOHYA_SECTIONS = ['model_arguments', 'additional_network_arguments', 'optimizer_arguments', 'dataset_arguments', 'training_arguments', 'sample_prompt_arguments', 'saving_arguments', 'logging_arguments'];

/** kohya keys that do not change the trained weights here (memory/speed/logging switches). */
const IGNORED_KOHYA_KEYS = new Set([
  'xformers', 'sdpa', 'mem_eff_attn', 'persistent_data_loader_workers', 'max_data_loader_n_workers', 'logging_dir', 'log_prefix',
  'log_with', 'save_model_as', 'cache_latents', 'vae_batch_size', 'lowram', 'highvram', 'log_tracker_name',
  'save_state', 'network_module', 'max_token_length', 'mixed_precision', 'save_precision', 'full_fp16', 'full_bf16', 'no_half_vae',
]);

/** kohya keys Redline does not implement: refused so a run never silently differs. */
const UNSUPPORTED_KOHYA_KEYS: Record<string, string> = {
  v2: 'SD 2.x models are not supported; Redline trains SD 1.5-family models.',
  v_parameterization: 'v-prediction training is not implemented; remove the key.',
  flip_aug: 'flip augmentation is not implemented; remove the key or flip images into the dataset.',
  color_aug: 'colour augmentation is not implemented; remove the key.',
  random_crop: 'random cropping is not implemented (images are centre-cropped as kohya does by default); remove the key.',
  face_crop_aug_range: 'face crop augmentation is not implemented; remove the key.',
  multires_noise_iterations: 'pyramid noise is not implemented; use noise_offset.',
  adaptive_noise_scale: 'adaptive noise scale is not implemented; use noise_offset.',
  scale_v_pred_loss_like_noise_pred: 'v-prediction is not implemented.',
  network_weights: 'starting from existing LoRA weights is not implemented; use --resume with a Redline checkpoint.',
  max_train_epochs: 'give max_train_steps instead (Redline counts optimizer steps).',
  lr_scheduler_power: 'the polynomial schedule is not implemented.',
  caption_dropout_every_n_epochs: 'caption_dropout_every_n_epochs is not implemented; use caption_dropout_rate.',
  token_warmup_step: 'token warmup is not implemented.',
  huber_c: 'Huber loss is not implemented (the loss is MSE).',
  loss_type: 'only the L2 (MSE) loss is implemented.',
  masked_loss: 'masked loss is not implemented.',
  debiased_estimation_loss: 'the debiased estimation loss is not implemented; min_snr_gamma is.',
};

const GENERAL_KEYS = ['shuffle_caption', 'caption_extension', 'keep_tokens', 'caption_dropout_rate', 'caption_tag_dropout_rate', 'resolution', 'batch_size', 'enable_bucket', 'min_bucket_reso', 'max_bucket_reso', 'bucket_reso_steps', 'bucket_no_upscale'];
const SUBSET_KEYS = ['image_dir', 'num_repeats', 'caption_extension', 'shuffle_caption', 'keep_tokens', 'caption_dropout_rate', 'caption_tag_dropout_rate', 'is_reg', 'class_tokens'];
const DATASET_KEYS = [...GENERAL_KEYS, 'subsets', 'train_data_dir', 'reg_data_dir'];
const TRAINING_KEYS = [
  'mode', 'pretrained_model_name_or_path', 'pretrained_model', 'output_dir', 'output_name', 'network_dim', 'network_rank', 'network_alpha', 'network_target',
  'network_train_unet_only', 'learning_rate', 'unet_lr', 'text_encoder_lr', 'lr_scheduler', 'lr_warmup_steps', 'lr_scheduler_num_cycles',
  'max_train_steps', 'gradient_accumulation_steps', 'min_snr_gamma', 'noise_offset', 'prior_loss_weight', 'seed', 'save_every_n_steps', 'sample_every_n_steps',
  'sample_prompts', 'sample_sampler', 'sample_steps', 'sample_cfg_scale', 'sample_size', 'optimizer_type', 'optimizer_args', 'weight_decay', 'clip_skip',
  'cache_latents_to_disk', 'gradient_checkpointing', 'dataset_config', 'train_data_dir', 'reg_data_dir', 'category', ...GENERAL_KEYS,
];
const CALIBRATION_KEYS = ['holdout_per_level', 'strengths', 'effect', 'steps', 'cfg_scale', 'sampler', 'seed'];

function bad(file: string, what: string, hint?: string): RedlineError {
  return new RedlineError('train_config', `${file}: ${what}`, hint);
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0]!;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j]!;
      d[j] = Math.min(d[j]! + 1, d[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length]!;
}

class Reader {
  readonly ignored: string[] = [];
  constructor(readonly file: string) {}

  checkKeys(t: Table, allowed: readonly string[], where: string): void {
    for (const k of Object.keys(t)) {
      if (allowed.includes(k)) continue;
      if (UNSUPPORTED_KOHYA_KEYS[k]) throw bad(this.file, `${where}: "${k}" is not supported: ${UNSUPPORTED_KOHYA_KEYS[k]}`);
      if (IGNORED_KOHYA_KEYS.has(k)) {
        this.ignored.push(k);
        continue;
      }
      const near = allowed.filter((a) => editDistance(a, k) <= 3).sort((a, b) => editDistance(a, k) - editDistance(b, k));
      throw bad(this.file, `${where}: unknown key "${k}".`, near.length ? `Did you mean "${near[0]}"?` : `Known keys: ${allowed.join(', ')}.`);
    }
  }

  num(t: Table, key: string, where: string, o: { min?: number; max?: number; int?: boolean; def?: number }): number {
    const v = t[key] ?? o.def;
    if (v === undefined) throw bad(this.file, `${where}: "${key}" is required.`);
    if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(this.file, `${where}: "${key}" must be a number, got ${JSON.stringify(v)}.`);
    if (o.int && !Number.isInteger(v)) throw bad(this.file, `${where}: "${key}" must be a whole number, got ${v}.`);
    if (o.min !== undefined && v < o.min) throw bad(this.file, `${where}: "${key}" must be at least ${o.min}, got ${v}.`);
    if (o.max !== undefined && v > o.max) throw bad(this.file, `${where}: "${key}" must be at most ${o.max}, got ${v}.`);
    return v;
  }

  optNum(t: Table, key: string, where: string, o: { min?: number; max?: number; int?: boolean }): number | null {
    return t[key] === undefined ? null : this.num(t, key, where, o);
  }

  bool(t: Table, key: string, where: string, def: boolean): boolean {
    const v = t[key] ?? def;
    if (typeof v !== 'boolean') throw bad(this.file, `${where}: "${key}" must be true or false, got ${JSON.stringify(v)}.`);
    return v;
  }

  str(t: Table, key: string, where: string, def?: string): string {
    const v = t[key] ?? def;
    if (v === undefined) throw bad(this.file, `${where}: "${key}" is required.`);
    if (typeof v !== 'string') throw bad(this.file, `${where}: "${key}" must be text, got ${JSON.stringify(v)}.`);
    return v;
  }

  path(t: Table, key: string, where: string, def?: string): string {
    const p = this.str(t, key, where, def);
    return isAbsolute(p) ? p : resolve(dirname(this.file), p);
  }

  reso(v: unknown, where: string): Reso {
    if (typeof v === 'number' && Number.isInteger(v) && v > 0) return [v, v];
    if (typeof v === 'string' && /^\d+(,\s*\d+)?$/.test(v)) {
      const [w, h] = v.split(',').map((s) => Number(s.trim()));
      return [w!, h ?? w!];
    }
    if (Array.isArray(v) && v.length === 2 && v.every((x) => Number.isInteger(x) && (x as number) > 0)) return [v[0] as number, v[1] as number];
    throw bad(this.file, `${where}: "resolution" must be a size (512), "512,768" or [512, 768], got ${JSON.stringify(v)}.`);
  }
}

function table(v: unknown, file: string, where: string): Table {
  if (v === undefined) return {};
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw bad(file, `${where} must be a table.`);
  return v as Table;
}

/** Reads and validates a training config file. */
export function loadTrainConfig(file: string): TrainConfig {
  const path = resolve(file);
  if (!existsSync(path) || !statSync(path).isFile()) throw new RedlineError('file_not_found', `${file} does not exist.`, 'Pass the path of a training TOML file.');
  return parseTrainConfig(readFileSync(path, 'utf8'), path);
}

function parseTomlText(text: string, file: string): Table {
  try {
    return parseToml(text) as Table;
  } catch (err) {
    if (err instanceof TomlError) throw bad(file, `not valid TOML: ${err.message.split('\n')[0]} (line ${err.line}, column ${err.column}).`);
    throw err;
  }
}

export function parseTrainConfig(text: string, file: string): TrainConfig {
  const root = parseTomlText(text, file);
  const r = new Reader(file);
  for (const k of Object.keys(root)) {
    if (!['general', 'datasets', 'training', 'calibration', ...KOHYA_SECTIONS].includes(k)) {
      const v = root[k];
      if (v && typeof v === 'object' && !Array.isArray(v)) throw bad(file, `unknown table [${k}].`, `Use [training], [general], [[datasets]], [calibration] or kohya's config sections.`);
    }
  }
  // kohya merges the sections of its training config file; top-level keys count too.
  const training: Table = {};
  for (const [k, v] of Object.entries(root)) if (!['general', 'datasets', 'training', 'calibration', ...KOHYA_SECTIONS].includes(k)) training[k] = v;
  for (const s of [...KOHYA_SECTIONS, 'training']) {
    for (const [k, v] of Object.entries(table(root[s], file, `[${s}]`))) {
      if (k in training) throw bad(file, `"${k}" is given twice (in [${s}] and before).`);
      training[k] = v;
    }
  }
  r.checkKeys(training, TRAINING_KEYS, '[training]');
  const T = '[training]';

  let general = table(root.general, file, '[general]');
  let datasetsRaw = root.datasets;
  let datasetFile = file;
  if (training.dataset_config !== undefined) {
    if (root.general !== undefined || root.datasets !== undefined) throw bad(file, 'give the datasets either here or in dataset_config, not both.');
    datasetFile = r.path(training, 'dataset_config', T);
    if (!existsSync(datasetFile)) throw bad(file, `dataset_config ${datasetFile} does not exist.`);
    const d = parseTomlText(readFileSync(datasetFile, 'utf8'), datasetFile);
    for (const k of Object.keys(d)) if (k !== 'general' && k !== 'datasets') throw bad(datasetFile, `unknown key or table "${k}".`, 'A dataset config has [general] and [[datasets]].');
    general = table(d.general, datasetFile, '[general]');
    datasetsRaw = d.datasets;
  }
  const dr = new Reader(datasetFile);
  dr.checkKeys(general, GENERAL_KEYS, '[general]');
  // dataset keys given among the training keys (kohya command-line style) act as [general]
  const defaults: Table = { ...Object.fromEntries(GENERAL_KEYS.filter((k) => training[k] !== undefined).map((k) => [k, training[k]])), ...general };

  let datasetList: Table[];
  if (datasetsRaw === undefined) {
    if (training.train_data_dir === undefined) throw bad(file, 'no datasets.', 'Add [[datasets]] with [[datasets.subsets]] image_dir = "...", or train_data_dir = "..." (folders named N_name).');
    datasetList = [{ train_data_dir: training.train_data_dir, ...(training.reg_data_dir !== undefined ? { reg_data_dir: training.reg_data_dir } : {}) }];
  } else {
    if (!Array.isArray(datasetsRaw) || datasetsRaw.length === 0) throw bad(datasetFile, '[[datasets]] must be a list of tables.');
    datasetList = datasetsRaw.map((d, i) => table(d, datasetFile, `[[datasets]] #${i + 1}`));
  }
  const datasets = datasetList.map((d, i) => readDataset(dr, { ...defaults, ...d }, `[[datasets]] #${i + 1}`, d));

  const mode = r.str(training, 'mode', T, 'lora');
  if (mode !== 'lora' && mode !== 'fine_tune') throw bad(file, `${T}: mode must be "lora" or "fine_tune", got "${mode}".`);
  if (training.pretrained_model !== undefined && training.pretrained_model_name_or_path !== undefined) throw bad(file, 'give pretrained_model_name_or_path or pretrained_model, not both.');
  const modelKey = training.pretrained_model !== undefined ? 'pretrained_model' : 'pretrained_model_name_or_path';
  if (training.network_dim !== undefined && training.network_rank !== undefined) throw bad(file, 'give network_dim or network_rank, not both.');
  const networkDim = r.num(training, training.network_rank !== undefined ? 'network_rank' : 'network_dim', T, { min: 1, max: 1024, int: true, def: 4 });
  const target = r.str(training, 'network_target', T, 'attention');
  if (!['attention', 'attention+ff', 'attention+ff+conv'].includes(target)) {
    throw bad(file, `${T}: network_target must be "attention", "attention+ff" or "attention+ff+conv", got "${target}".`);
  }
  const scheduler = r.str(training, 'lr_scheduler', T, 'constant');
  if (!LR_SCHEDULERS.includes(scheduler as LrScheduler)) throw bad(file, `${T}: lr_scheduler "${scheduler}" is not known.`, `Use one of ${LR_SCHEDULERS.join(', ')}.`);
  const optimizer = r.str(training, 'optimizer_type', T, 'AdamW');
  if (optimizer.toLowerCase() !== 'adamw') throw bad(file, `${T}: optimizer_type "${optimizer}" is not implemented.`, 'Use AdamW.');
  const opt = readOptimizerArgs(r, training);
  const maxTrainSteps = r.num(training, 'max_train_steps', T, { min: 1, int: true, def: 1600 });
  const lrWarmupSteps = r.num(training, 'lr_warmup_steps', T, { min: 0, int: true, def: 0 });
  if (lrWarmupSteps > maxTrainSteps) throw bad(file, `${T}: lr_warmup_steps (${lrWarmupSteps}) exceeds max_train_steps (${maxTrainSteps}).`);
  const prompts = readPrompts(r, training);
  const category = training.category === undefined ? null : r.str(training, 'category', T);
  // Checked now, not when the sidecar is written after hours of training: the registry
  // refuses adapters with a hard-blocked or unknown category.
  const categoryProblem = category === null ? null : sidecarCategoryProblem(category);
  if (categoryProblem) throw bad(file, `${T}: ${categoryProblem.problem}${categoryProblem.kind === 'malformed' ? `, got "${category}"` : ''}.`, categoryProblem.kind === 'hard_blocked' ? undefined : `Use one of ${SIDECAR_CATEGORIES.join(', ')}, or leave category out for an adapter that makes no graded content.`);
  const sampleSize = training.sample_size === undefined ? null : r.reso(training.sample_size, T);
  if (sampleSize && (sampleSize[0] % 8 || sampleSize[1] % 8)) throw bad(file, `${T}: sample_size must be multiples of 8.`);

  const cal = root.calibration === undefined ? null : readCalibration(r, table(root.calibration, file, '[calibration]'));
  const lr = r.num(training, 'learning_rate', T, { min: 0, max: 1, def: 1e-4 });
  return {
    file,
    mode,
    pretrainedModel: r.path(training, modelKey, T),
    outputDir: r.path(training, 'output_dir', T),
    outputName: checkName(file, r.str(training, 'output_name', T, 'last')),
    networkDim,
    networkAlpha: r.num(training, 'network_alpha', T, { min: 0, max: 65536, def: 1 }),
    networkTarget: target as NetworkTarget,
    trainUnetOnly: r.bool(training, 'network_train_unet_only', T, false),
    learningRate: lr,
    unetLr: r.optNum(training, 'unet_lr', T, { min: 0, max: 1 }),
    textEncoderLr: r.optNum(training, 'text_encoder_lr', T, { min: 0, max: 1 }),
    lrScheduler: scheduler as LrScheduler,
    lrWarmupSteps,
    lrSchedulerNumCycles: r.num(training, 'lr_scheduler_num_cycles', T, { min: 1, int: true, def: 1 }),
    maxTrainSteps,
    gradientAccumulationSteps: r.num(training, 'gradient_accumulation_steps', T, { min: 1, int: true, def: 1 }),
    minSnrGamma: r.optNum(training, 'min_snr_gamma', T, { min: 0.01 }),
    noiseOffset: r.num(training, 'noise_offset', T, { min: 0, max: 1, def: 0 }),
    priorLossWeight: r.num(training, 'prior_loss_weight', T, { min: 0, def: 1 }),
    seed: r.num(training, 'seed', T, { min: 0, max: 2 ** 32 - 1, int: true, def: 42 }),
    saveEveryNSteps: r.optNum(training, 'save_every_n_steps', T, { min: 1, int: true }),
    sampleEveryNSteps: r.optNum(training, 'sample_every_n_steps', T, { min: 1, int: true }),
    samplePrompts: prompts,
    sampleSampler: r.str(training, 'sample_sampler', T, 'euler_a'),
    sampleSteps: r.num(training, 'sample_steps', T, { min: 1, max: 150, int: true, def: 20 }),
    sampleCfgScale: r.num(training, 'sample_cfg_scale', T, { min: 0, max: 30, def: 7 }),
    sampleSize,
    weightDecay: opt.weightDecay,
    betas: opt.betas,
    adamEps: opt.eps,
    clipSkip: r.num(training, 'clip_skip', T, { min: 1, max: 12, int: true, def: 1 }),
    cacheLatentsToDisk: r.bool(training, 'cache_latents_to_disk', T, true),
    gradientCheckpointing: r.bool(training, 'gradient_checkpointing', T, false),
    category,
    calibration: cal,
    datasets,
    ignoredKeys: [...new Set([...r.ignored, ...dr.ignored])],
  };
}

function checkName(file: string, name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(name) || name.endsWith('.safetensors')) {
    throw bad(file, `output_name "${name}" must be a file name without extension (letters, digits, . _ -).`);
  }
  return name;
}

function readOptimizerArgs(r: Reader, t: Table): { weightDecay: number; betas: [number, number]; eps: number } {
  const out = { weightDecay: 0.01, betas: [0.9, 0.999] as [number, number], eps: 1e-8 };
  if (t.optimizer_args !== undefined) {
    if (!Array.isArray(t.optimizer_args)) throw bad(r.file, '[training]: optimizer_args must be a list like ["weight_decay=0.01", "betas=0.9,0.999"].');
    for (const a of t.optimizer_args) {
      const m = typeof a === 'string' ? /^\s*(\w+)\s*=\s*(.+?)\s*$/.exec(a) : null;
      if (!m) throw bad(r.file, `[training]: optimizer_args entry ${JSON.stringify(a)} is not "name=value".`);
      const nums = m[2]!.replace(/[()]/g, '').split(',').map(Number);
      if (nums.some((n) => !Number.isFinite(n))) throw bad(r.file, `[training]: optimizer_args ${m[1]} has a value that is not a number: ${m[2]}.`);
      if (m[1] === 'weight_decay' && nums.length === 1 && nums[0]! >= 0) out.weightDecay = nums[0]!;
      else if (m[1] === 'betas' && nums.length === 2 && nums.every((b) => b >= 0 && b < 1)) out.betas = [nums[0]!, nums[1]!];
      else if (m[1] === 'eps' && nums.length === 1 && nums[0]! > 0) out.eps = nums[0]!;
      else throw bad(r.file, `[training]: optimizer_args "${a}" is not supported.`, 'AdamW takes weight_decay=W, betas=B1,B2, eps=E.');
    }
  }
  if (t.weight_decay !== undefined) out.weightDecay = r.num(t, 'weight_decay', '[training]', { min: 0, max: 1 });
  return out;
}

function readPrompts(r: Reader, t: Table): string[] {
  const v = t.sample_prompts;
  if (v === undefined) return [];
  if (Array.isArray(v)) {
    if (!v.every((p) => typeof p === 'string' && p.trim())) throw bad(r.file, '[training]: sample_prompts must be a list of non-empty prompts or a file path.');
    return v as string[];
  }
  const p = r.path(t, 'sample_prompts', '[training]');
  if (!existsSync(p)) throw bad(r.file, `sample_prompts file ${p} does not exist.`);
  // kohya's prompt file: one prompt per line, # comments; inline --n/--s/... options are not read
  const lines = readFileSync(p, 'utf8').split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const withOptions = lines.find((l) => / --[a-z]\s/.test(` ${l} `));
  if (withOptions) throw bad(r.file, `sample prompt "${withOptions.slice(0, 60)}" has kohya inline options (--n, --s, ...), which are not read.`, 'Use sample_steps, sample_cfg_scale, sample_size instead.');
  return lines;
}

function readCalibration(r: Reader, t: Table): CalibrationConfig {
  const W = '[calibration]';
  r.checkKeys(t, CALIBRATION_KEYS, W);
  const strengths = t.strengths ?? [0, 0.25, 0.5, 0.75, 1, 1.25, 1.5];
  // the policy accepts calibrated strengths from 0 to 2
  if (!Array.isArray(strengths) || strengths.length < 2 || !strengths.every((s) => typeof s === 'number' && s >= 0 && s <= 2)) {
    throw bad(r.file, `${W}: strengths must be a list of at least two numbers from 0 to 2.`);
  }
  const sorted = [...(strengths as number[])].sort((a, b) => a - b);
  if (sorted[0] !== 0) throw bad(r.file, `${W}: strengths must include 0 (the base model's effect is the reference).`);
  const effect = r.str(t, 'effect', W, 'splatter_coverage');
  if (effect !== 'splatter_coverage') throw bad(r.file, `${W}: effect "${effect}" is not known.`, 'Use "splatter_coverage" (the procedural scenes\' paint coverage).');
  return {
    holdoutPerLevel: r.num(t, 'holdout_per_level', W, { min: 1, max: 1000, int: true, def: 2 }),
    strengths: sorted,
    effect,
    steps: r.num(t, 'steps', W, { min: 1, max: 150, int: true, def: 20 }),
    cfgScale: r.num(t, 'cfg_scale', W, { min: 0, max: 30, def: 7 }),
    sampler: r.str(t, 'sampler', W, 'euler_a'),
    seed: r.num(t, 'seed', W, { min: 0, int: true, def: 1234 }),
  };
}

function readDataset(r: Reader, d: Table, where: string, own: Table): DatasetConfig {
  r.checkKeys(own, DATASET_KEYS, where);
  const resolution = r.reso(d.resolution ?? 512, where);
  const enableBucket = r.bool(d, 'enable_bucket', where, false);
  const steps = r.num(d, 'bucket_reso_steps', where, { min: 8, int: true, def: 64 });
  if (steps % 8 !== 0) throw bad(r.file, `${where}: bucket_reso_steps ${steps} is not a multiple of 8 (the VAE's downscale factor).`);
  if (resolution[0] % 8 || resolution[1] % 8) throw bad(r.file, `${where}: resolution ${resolution.join('x')} is not a multiple of 8.`);
  const minB = r.num(d, 'min_bucket_reso', where, { min: 8, int: true, def: 256 });
  const maxB = r.num(d, 'max_bucket_reso', where, { min: 8, int: true, def: 1024 });
  if (enableBucket) {
    if (minB > maxB) throw bad(r.file, `${where}: min_bucket_reso ${minB} is larger than max_bucket_reso ${maxB}.`);
    if (maxB < Math.max(...resolution)) throw bad(r.file, `${where}: max_bucket_reso ${maxB} is smaller than the resolution ${resolution.join('x')}.`, 'kohya requires max_bucket_reso >= each side of the resolution.');
    if (minB % steps || maxB % steps) throw bad(r.file, `${where}: min_bucket_reso and max_bucket_reso must be multiples of bucket_reso_steps (${steps}).`);
  }
  const subsets: SubsetConfig[] = [];
  const subsetDefaults = (s: Table, isReg: boolean, w: string): SubsetConfig => ({
    imageDir: r.path(s, 'image_dir', w),
    numRepeats: r.num(s, 'num_repeats', w, { min: 1, int: true, def: 1 }),
    captionExtension: normalizeExtension(r.str(s, 'caption_extension', w, '.txt')),
    shuffleCaption: r.bool(s, 'shuffle_caption', w, false),
    keepTokens: r.num(s, 'keep_tokens', w, { min: 0, int: true, def: 0 }),
    captionDropoutRate: r.num(s, 'caption_dropout_rate', w, { min: 0, max: 1, def: 0 }),
    captionTagDropoutRate: r.num(s, 'caption_tag_dropout_rate', w, { min: 0, max: 1, def: 0 }),
    isReg: s.is_reg === undefined ? isReg : r.bool(s, 'is_reg', w, false),
    classTokens: s.class_tokens === undefined ? null : r.str(s, 'class_tokens', w),
  });
  const inherited: Table = Object.fromEntries(SUBSET_KEYS.filter((k) => d[k] !== undefined).map((k) => [k, d[k]]));
  if (d.subsets !== undefined) {
    if (!Array.isArray(d.subsets) || d.subsets.length === 0) throw bad(r.file, `${where}: subsets must be a non-empty list ([[datasets.subsets]]).`);
    d.subsets.forEach((s, i) => {
      const w = `${where} subset #${i + 1}`;
      const st = table(s, r.file, w);
      r.checkKeys(st, SUBSET_KEYS, w);
      const merged = { ...inherited, ...st };
      const sub = subsetDefaults(merged, false, w);
      // kohya folder convention: an image_dir named N_name repeats N times unless num_repeats is set
      const m = /(?:^|[\\/])(\d+)_([^\\/]+)$/.exec(sub.imageDir);
      if (m && st.num_repeats === undefined) sub.numRepeats = Number(m[1]);
      subsets.push(sub);
    });
  }
  for (const [key, isReg] of [['train_data_dir', false], ['reg_data_dir', true]] as const) {
    if (d[key] === undefined) continue;
    for (const f of repeatFolders(r, r.path(d, key, where), key)) subsets.push(subsetDefaults({ ...inherited, image_dir: f.dir, num_repeats: f.repeats, class_tokens: f.name }, isReg, `${where} ${key}`));
  }
  if (subsets.length === 0) throw bad(r.file, `${where} has no subsets.`, 'Add [[datasets.subsets]] image_dir = "...", or train_data_dir.');
  return {
    resolution,
    batchSize: r.num(d, 'batch_size', where, { min: 1, max: 64, int: true, def: 1 }),
    enableBucket,
    minBucketReso: minB,
    maxBucketReso: maxB,
    bucketResoSteps: steps,
    bucketNoUpscale: r.bool(d, 'bucket_no_upscale', where, false),
    subsets,
  };
}

function normalizeExtension(e: string): string {
  return e.startsWith('.') ? e : `.${e}`;
}

/** kohya train_data_dir: subfolders named N_name (N repeats, name = class tokens). */
function repeatFolders(r: Reader, dir: string, key: string): Array<{ dir: string; repeats: number; name: string }> {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw bad(r.file, `${key} ${dir} is not a folder.`);
  const out: Array<{ dir: string; repeats: number; name: string }> = [];
  const others: string[] = [];
  for (const name of readdirSorted(dir)) {
    const p = resolve(dir, name);
    if (!statSync(p).isDirectory()) continue;
    const m = /^(\d+)_(.+)$/.exec(name);
    if (!m || Number(m[1]) < 1) others.push(name);
    else out.push({ dir: p, repeats: Number(m[1]), name: m[2]! });
  }
  if (others.length) throw bad(r.file, `${key} ${dir}: folder(s) ${others.join(', ')} are not named N_name.`, 'kohya reads subfolders named like "10_splatter" (10 repeats, class tokens "splatter").');
  if (!out.length) throw bad(r.file, `${key} ${dir} has no N_name subfolders.`, 'Put the images in a subfolder like "10_splatter" (10 repeats).');
  return out;
}

function readdirSorted(dir: string): string[] {
  return readdirSync(dir).filter((n) => !n.startsWith('.')).sort();
}
