// Opens SD 1.x weights from a diffusers folder or an original single-file checkpoint and
// presents each component under diffusers parameter names (see sd15-keymap.ts), lazily.
// Every expected weight must be present with the shape its config implies; anything else
// is an error that names the missing or unexpected keys, so a truncated or foreign file
// never loads half-way.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { RedlineError } from '../../errors.ts';
import { SafetensorsFile } from '../../tensor/safetensors.ts';
import { type CLIPTextConfig, SD15_CONFIGS, type SD15Configs, type UNetConfig, type VAEConfig } from './configs.ts';
import { classifyKeys, familyRefusal, FAMILY_NAMES, type ModelFamily, pickleRefusal, requireSafetensors, sniffFileKind } from './detect.ts';
import { type Component, keyMapFor, type KeyMapEntry, ORIGINAL_PREFIX } from './sd15-keymap.ts';
import { MappedWeightSource, type StoredTensor } from './weight-source.ts';

export const COMPONENTS: readonly Component[] = ['text_encoder', 'unet', 'vae'];

export interface OpenCheckpointOptions {
  /** diffusers variant to load from a folder, e.g. 'fp16' (`*.fp16.safetensors`). */
  variant?: string;
  /**
   * Configs to use instead of the folder's or the inferred ones: a diffusers folder whose
   * COMPONENT/config.json files are read, or config objects. Needed for a single file whose group or head
   * counts differ from SD 1.5's (they are not recorded in the weights).
   */
  configs?: string | Partial<SD15Configs>;
}

export interface Checkpoint {
  path: string;
  format: 'diffusers' | 'single-file';
  family: 'sd1';
  configs: SD15Configs;
  /** Where the configs came from. */
  configSource: 'folder' | 'inferred-from-weights' | 'override';
  components: Record<Component, MappedWeightSource>;
  /** Weight files opened. */
  files: string[];
  /** Keys in the file that are not model weights (EMA copies, schedule buffers, position_ids). */
  ignoredKeys: string[];
  /** The folder's tokenizer/ (vocab.json + merges.txt), or null: single files carry none. */
  tokenizerDir: string | null;
  close(): void;
}

export function openCheckpoint(path: string, opts: OpenCheckpointOptions = {}): Checkpoint {
  if (!existsSync(path)) throw new RedlineError('file_not_found', `${path} does not exist.`);
  return statSync(path).isDirectory() ? openDiffusersFolder(path, opts) : openSingleFile(path, opts);
}

// ---------------------------------------------------------------------------------------
// shared

function readJson(path: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw new RedlineError('config_invalid', `cannot read ${path}: ${(err as Error).message}.`);
  }
}

function sample(list: string[], n = 5): string {
  return list.slice(0, n).join(', ') + (list.length > n ? `, ... (${list.length - n} more)` : '');
}

function overrideConfigs(o: string | Partial<SD15Configs>): Partial<SD15Configs> {
  if (typeof o !== 'string') return o;
  const out: Partial<SD15Configs> = {};
  for (const c of [...COMPONENTS, 'scheduler'] as const) {
    const file = join(o, c, c === 'scheduler' ? 'scheduler_config.json' : 'config.json');
    if (existsSync(file)) (out as Record<string, unknown>)[c] = readJson(file);
  }
  if (!out.unet && !out.vae && !out.text_encoder) {
    throw new RedlineError('config_missing', `${o} has no unet/, vae/ or text_encoder/ config.json.`, 'Pass a diffusers model folder as the config source.');
  }
  return out;
}

function checkGroups(what: string, channels: number[], groups: number, hint: string): void {
  const bad = channels.filter((c) => c % groups !== 0);
  if (bad.length) {
    throw new RedlineError(
      'config_mismatch',
      `${what}: channel widths [${channels.join(', ')}] are not divisible by norm_num_groups ${groups}.`,
      hint,
    );
  }
}

/** Builds a component's source from its key map and a lookup of stored tensors; strict. */
function buildSource(
  label: string,
  map: KeyMapEntry[],
  lookup: (e: KeyMapEntry) => { file: SafetensorsFile; key: string } | undefined,
): MappedWeightSource {
  const entries = new Map<string, StoredTensor>();
  const missing: string[] = [];
  const wrongShape: string[] = [];
  for (const e of map) {
    const hit = lookup(e);
    if (!hit) {
      missing.push(e.diffusers);
      continue;
    }
    const stored = hit.file.info(hit.key).shape;
    const expected = e.conv1x1InOriginal && stored.length === 4 ? [...e.shape, 1, 1] : e.shape;
    if (stored.length !== expected.length || stored.some((d, i) => d !== expected[i])) {
      wrongShape.push(`${hit.key} is [${stored.join(', ')}], expected [${expected.join(', ')}]`);
      continue;
    }
    entries.set(e.diffusers, { file: hit.file, key: hit.key, shape: e.shape });
  }
  if (missing.length) {
    throw new RedlineError(
      'checkpoint_incomplete',
      `${label} lacks ${missing.length} of ${map.length} weights: ${sample(missing)}.`,
      'The file may be truncated, pruned of a component, or not an SD 1.5-family model.',
    );
  }
  if (wrongShape.length) {
    throw new RedlineError(
      'checkpoint_shape_mismatch',
      `${label} has ${wrongShape.length} weights whose shapes do not fit its config: ${sample(wrongShape, 3)}.`,
      'The config does not describe this model; pass the right one (--config DIR) or check that the file is an SD 1.5-family model.',
    );
  }
  return new MappedWeightSource(label, entries);
}

// ---------------------------------------------------------------------------------------
// diffusers folder

const REFUSED_PIPELINES: Array<[RegExp, ModelFamily]> = [
  [/XL/, 'sdxl'],
  [/StableDiffusion3/, 'sd3'],
  [/Flux/, 'flux'],
];

const WEIGHT_BASENAMES: Record<Component, string> = {
  unet: 'diffusion_pytorch_model',
  vae: 'diffusion_pytorch_model',
  text_encoder: 'model',
};

/** The safetensors file(s) of one component folder, honouring a variant and sharding. */
function componentFiles(dir: string, component: Component, variant: string | undefined): string[] {
  const base = WEIGHT_BASENAMES[component];
  const names = existsSync(dir) ? readdirSync(dir) : [];
  const candidates = variant ? [`${base}.${variant}.safetensors`] : [`${base}.safetensors`];
  if (!variant) {
    // A folder that ships only one precision variant (e.g. fp16) loads it: same model.
    const variants = names.filter((n) => n.startsWith(`${base}.`) && n.endsWith('.safetensors') && n.split('.').length === 3);
    candidates.push(...variants.sort());
  }
  for (const c of candidates) {
    if (names.includes(c)) return [join(dir, c)];
    const index = `${c}.index.json`;
    if (names.includes(index)) {
      const wm = readJson(join(dir, index)).weight_map as Record<string, string> | undefined;
      if (!wm || typeof wm !== 'object') throw new RedlineError('config_invalid', `${join(dir, index)} has no weight_map.`);
      return [...new Set(Object.values(wm))].map((f) => {
        if (f.includes('/') || f.includes('\\') || f.startsWith('.')) throw new RedlineError('config_invalid', `${join(dir, index)} names a shard outside its folder: ${f}.`);
        return join(dir, f);
      });
    }
  }
  const pickles = names.filter((n) => /\.(bin|ckpt|pt|pth)$/.test(n));
  if (pickles.length) throw pickleRefusal(join(dir, pickles[0]!));
  throw new RedlineError(
    'checkpoint_incomplete',
    `${dir} has no ${variant ? `${base}.${variant}.safetensors` : `${base}.safetensors`}${names.length ? ` (it has: ${sample(names)})` : ''}.`,
    variant ? `Check the variant name, or omit it to load the default weights.` : 'A diffusers folder needs unet/, vae/ and text_encoder/ weights in safetensors format.',
  );
}

/** diffusers/transformers have renamed some parameters over the years; accept both names. */
function diffusersAliases(component: Component, name: string): string[] {
  if (component === 'text_encoder') {
    // transformers >= 5.6 saves the flattened CLIPTextModel without `text_model.`.
    return name.startsWith('text_model.') ? [name, name.slice('text_model.'.length)] : [name];
  }
  if (component === 'vae') {
    const old: Array<[string, string]> = [['.to_q.', '.query.'], ['.to_k.', '.key.'], ['.to_v.', '.value.'], ['.to_out.0.', '.proj_attn.']];
    for (const [now, before] of old) if (name.includes(`attentions.0${now}`)) return [name, name.replace(now, before)];
  }
  return [name];
}

function openDiffusersFolder(dir: string, opts: OpenCheckpointOptions): Checkpoint {
  const indexPath = join(dir, 'model_index.json');
  if (existsSync(indexPath)) {
    const cls = String(readJson(indexPath)._class_name ?? '');
    for (const [re, fam] of REFUSED_PIPELINES) if (re.test(cls)) throw familyRefusal(`${dir} (${cls})`, fam);
    if (cls && !cls.startsWith('StableDiffusion')) throw familyRefusal(`${dir} (${cls})`, 'unknown');
  } else if (!existsSync(join(dir, 'unet'))) {
    throw new RedlineError('not_a_model', `${dir} is not a diffusers model folder (no model_index.json, no unet/).`);
  }

  const folderConfigs = overrideConfigs(dir);
  const override = opts.configs ? overrideConfigs(opts.configs) : {};
  const configs: SD15Configs = {
    unet: (override.unet ?? folderConfigs.unet) as UNetConfig,
    vae: (override.vae ?? folderConfigs.vae) as VAEConfig,
    text_encoder: (override.text_encoder ?? folderConfigs.text_encoder) as CLIPTextConfig,
    scheduler: override.scheduler ?? folderConfigs.scheduler ?? structuredClone(SD15_CONFIGS.scheduler),
  };
  for (const c of COMPONENTS) {
    if (!configs[c]) throw new RedlineError('config_missing', `${join(dir, c, 'config.json')} is missing.`);
  }
  checkFamilyFromConfigs(dir, configs);

  const opened: SafetensorsFile[] = [];
  const files: string[] = [];
  const ignoredKeys: string[] = [];
  try {
    const components = {} as Record<Component, MappedWeightSource>;
    for (const c of COMPONENTS) {
      const byName = new Map<string, SafetensorsFile>();
      for (const f of componentFiles(join(dir, c), c, opts.variant)) {
        requireSafetensors(f);
        const st = SafetensorsFile.open(f);
        opened.push(st);
        files.push(f);
        for (const k of st.keys()) byName.set(k, st);
      }
      const map = keyMapFor(c, configs[c]);
      const used = new Set<string>();
      components[c] = buildSource(`${c} of ${dir}`, map, (e) => {
        for (const key of diffusersAliases(c, e.diffusers)) {
          const file = byName.get(key);
          if (file) {
            used.add(key);
            return { file, key };
          }
        }
        return undefined;
      });
      const extra = [...byName.keys()].filter((k) => !used.has(k));
      const ignorable = extra.filter((k) => k.endsWith('position_ids'));
      const unexpected = extra.filter((k) => !k.endsWith('position_ids'));
      if (unexpected.length) {
        throw new RedlineError(
          'checkpoint_unexpected_keys',
          `${c} of ${dir} has ${unexpected.length} weights that its config does not describe: ${sample(unexpected)}.`,
          'The folder is probably not an SD 1.5-family model, or its config.json does not match its weights.',
        );
      }
      ignoredKeys.push(...ignorable.map((k) => `${c}/${k}`));
    }
    const tok = join(dir, 'tokenizer');
    return {
      path: dir,
      format: 'diffusers',
      family: 'sd1',
      configs,
      configSource: opts.configs ? 'override' : 'folder',
      components,
      files,
      ignoredKeys,
      tokenizerDir: existsSync(join(tok, 'vocab.json')) && existsSync(join(tok, 'merges.txt')) ? tok : null,
      close: () => opened.forEach((f) => f.close()),
    };
  } catch (err) {
    opened.forEach((f) => f.close());
    throw err;
  }
}

function checkFamilyFromConfigs(what: string, c: SD15Configs): void {
  const u = c.unet;
  if (u.addition_embed_type === 'text_time' || (u.block_out_channels?.length === 3 && u.cross_attention_dim === 2048)) throw familyRefusal(what, 'sdxl');
  if (u.cross_attention_dim === 1024 || c.text_encoder.hidden_size === 1024) throw familyRefusal(what, 'sd2');
  if (u.cross_attention_dim !== c.text_encoder.hidden_size) {
    throw new RedlineError(
      'config_mismatch',
      `${what}: the UNet attends to ${u.cross_attention_dim}-wide text states but the text encoder produces ${c.text_encoder.hidden_size}.`,
      'The configs do not belong together.',
    );
  }
}

// ---------------------------------------------------------------------------------------
// single file (CompVis / LDM layout, as A1111 and Civitai distribute SD 1.5 models)

/** Keys some SD 1.x files carry that are not weights of the three components. */
function isNonModelKey(k: string): boolean {
  if (k.startsWith('model_ema.')) return true;
  if (k.endsWith('position_ids')) return true;
  // DDPM schedule buffers of the original LatentDiffusion module.
  return /^(betas|alphas_cumprod|alphas_cumprod_prev|sqrt_alphas_cumprod|sqrt_one_minus_alphas_cumprod|log_one_minus_alphas_cumprod|sqrt_recip_alphas_cumprod|sqrt_recipm1_alphas_cumprod|posterior_variance|posterior_log_variance_clipped|posterior_mean_coef1|posterior_mean_coef2|logvar|lvlb_weights)$/.test(k);
}

/** Older transformers stored CLIP without the `text_model.` level; A1111 accepts both. */
function originalAliases(key: string): string[] {
  const p = 'cond_stage_model.transformer.text_model.';
  return key.startsWith(p) ? [key, 'cond_stage_model.transformer.' + key.slice(p.length)] : [key];
}

/** Fills the widths that the weights record into the SD 1.5 configs. */
export function inferConfigs(file: SafetensorsFile): SD15Configs {
  const c = structuredClone(SD15_CONFIGS);
  const shapeOf = (k: string): number[] | undefined => {
    for (const a of originalAliases(k)) if (file.has(a)) return file.info(a).shape;
    return undefined;
  };
  const u = ORIGINAL_PREFIX.unet;
  const L = c.unet.layers_per_block;
  const convIn = shapeOf(`${u}input_blocks.0.0.weight`);
  if (convIn) c.unet.in_channels = convIn[1]!;
  const convOut = shapeOf(`${u}out.2.weight`);
  if (convOut) c.unet.out_channels = convOut[0]!;
  c.unet.block_out_channels = c.unet.block_out_channels.map((w, i) => shapeOf(`${u}input_blocks.${1 + i * (L + 1)}.0.out_layers.3.weight`)?.[0] ?? w);
  const toK = shapeOf(`${u}input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight`);
  if (toK) c.unet.cross_attention_dim = toK[1]!;
  const projIn = shapeOf(`${u}input_blocks.1.1.proj_in.weight`);
  if (projIn && projIn.length === 2) c.unet.use_linear_projection = true;

  const v = ORIGINAL_PREFIX.vae;
  c.vae.block_out_channels = c.vae.block_out_channels.map((w, i) => shapeOf(`${v}encoder.down.${i}.block.0.conv1.weight`)?.[0] ?? w);
  const pq = shapeOf(`${v}post_quant_conv.weight`);
  if (pq) c.vae.latent_channels = pq[0]!;

  const t = ORIGINAL_PREFIX.text_encoder + 'text_model.';
  const tok = shapeOf(`${t}embeddings.token_embedding.weight`);
  if (tok) {
    c.text_encoder.vocab_size = tok[0]!;
    c.text_encoder.hidden_size = tok[1]!;
    if (tok[1] !== 768 && tok[1]! % 64 === 0) c.text_encoder.num_attention_heads = tok[1]! / 64; // CLIP heads are 64 wide
  }
  const pos = shapeOf(`${t}embeddings.position_embedding.weight`);
  if (pos) c.text_encoder.max_position_embeddings = pos[0]!;
  const fc1 = shapeOf(`${t}encoder.layers.0.mlp.fc1.weight`);
  if (fc1) c.text_encoder.intermediate_size = fc1[0]!;
  let layers = 0;
  while (shapeOf(`${t}encoder.layers.${layers}.layer_norm1.weight`)) layers++;
  if (layers) c.text_encoder.num_hidden_layers = layers;
  return c;
}

function openSingleFile(path: string, opts: OpenCheckpointOptions): Checkpoint {
  const kind = sniffFileKind(path);
  if (kind === 'pickle') throw pickleRefusal(path);
  requireSafetensors(path);
  const file = SafetensorsFile.open(path);
  try {
    const keys = file.keys();
    const what = basename(path);
    const cls = classifyKeys(keys);
    if (cls.kind === 'lora') {
      throw new RedlineError('not_a_checkpoint', `${what} is a LoRA adapter, not a checkpoint.`, 'Give it as --lora FILE (or put it in the loras folder) and choose an SD 1.5 checkpoint as the model.');
    }
    if (cls.kind === 'vae') {
      throw new RedlineError('not_a_checkpoint', `${what} is a standalone VAE, not a full checkpoint.`, 'Choose an SD 1.5 checkpoint as the model.');
    }
    if (cls.family !== 'sd1') throw familyRefusal(what, cls.family);

    let configs: SD15Configs;
    let configSource: Checkpoint['configSource'];
    if (opts.configs) {
      const o = overrideConfigs(opts.configs);
      const inferred = inferConfigs(file);
      configs = {
        unet: o.unet ?? inferred.unet,
        vae: o.vae ?? inferred.vae,
        text_encoder: o.text_encoder ?? inferred.text_encoder,
        scheduler: o.scheduler ?? inferred.scheduler,
      };
      configSource = 'override';
    } else {
      configs = inferConfigs(file);
      configSource = 'inferred-from-weights';
      const hint = "Its group or head counts differ from SD 1.5's and a single file does not record them; pass the model's diffusers configs with --config DIR.";
      checkGroups(`unet of ${what}`, configs.unet.block_out_channels, configs.unet.norm_num_groups, hint);
      checkGroups(`vae of ${what}`, configs.vae.block_out_channels, configs.vae.norm_num_groups, hint);
      if (configs.text_encoder.hidden_size % configs.text_encoder.num_attention_heads !== 0) {
        throw new RedlineError('config_mismatch', `text encoder of ${what}: width ${configs.text_encoder.hidden_size} does not split into ${configs.text_encoder.num_attention_heads} heads.`, hint);
      }
    }
    checkFamilyFromConfigs(what, configs);

    const used = new Set<string>();
    const components = {} as Record<Component, MappedWeightSource>;
    for (const c of COMPONENTS) {
      components[c] = buildSource(`${c} of ${what}`, keyMapFor(c, configs[c]), (e) => {
        for (const key of originalAliases(e.original)) {
          if (file.has(key)) {
            used.add(key);
            return { file, key };
          }
        }
        return undefined;
      });
    }
    const extra = keys.filter((k) => !used.has(k));
    const ignoredKeys = extra.filter(isNonModelKey);
    const unexpected = extra.filter((k) => !isNonModelKey(k));
    if (unexpected.length) {
      throw new RedlineError(
        'checkpoint_unexpected_keys',
        `${what} has ${unexpected.length} weights that an ${FAMILY_NAMES.sd1} model of this shape does not have: ${sample(unexpected)}.`,
        'The file is probably a variant architecture Redline does not run.',
      );
    }
    return {
      path,
      format: 'single-file',
      family: 'sd1',
      configs,
      configSource,
      components,
      files: [path],
      ignoredKeys,
      tokenizerDir: null,
      close: () => file.close(),
    };
  } catch (err) {
    file.close();
    throw err;
  }
}
