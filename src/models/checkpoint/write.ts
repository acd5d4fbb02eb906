// Writing SD 1.x weights back out: an original-layout single file (what A1111, ComfyUI and
// diffusers' from_single_file load) or a diffusers folder. Tensors are pulled from their
// sources one at a time and streamed to disk, so exporting a 4 GB model never holds it
// whole in memory; the file appears under its name only once complete.
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { RedlineError } from '../../errors.ts';
import { type DType, safetensorsDtypeName, BYTES_PER_ELEMENT } from '../../tensor/dtype.ts';
import { numel, type Tensor } from '../../tensor/tensor.ts';
import type { SD15Configs } from './configs.ts';
import { type Component, keyMapFor } from './sd15-keymap.ts';
import type { WeightSource } from './weight-source.ts';

export interface StreamedTensor {
  name: string;
  dtype: DType;
  shape: number[];
  /** Called once, when the tensor's turn to be written comes. */
  load(): Tensor;
}

export type Progress = (done: number, total: number, name: string) => void;

/** safetensors writer that asks for each tensor only when writing it. Sorted names, as the reference writer. */
export function writeSafetensorsStreaming(path: string, tensors: StreamedTensor[], metadata?: Record<string, string>, onProgress?: Progress): void {
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of sorted) {
    const bytes = numel(t.shape) * BYTES_PER_ELEMENT[t.dtype];
    header[t.name] = { dtype: safetensorsDtypeName(t.dtype), shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(headerBytes.length));
  const tmp = `${path}.partial`;
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, len);
    writeSync(fd, headerBytes);
    sorted.forEach((t, i) => {
      let v = t.load();
      if (v.dtype !== t.dtype) v = v.to(t.dtype as 'f32' | 'f16' | 'bf16');
      if (numel(v.shape) !== numel(t.shape)) throw new Error(`${t.name}: source gave ${v.shape} for declared ${t.shape}`);
      const b = v.bytes();
      let done = 0;
      while (done < b.length) done += writeSync(fd, b, done, b.length - done);
      onProgress?.(i + 1, sorted.length, t.name);
    });
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, path);
}

export interface ExportOptions {
  /** Convert float weights to this dtype ('keep' leaves each as stored). */
  dtype?: 'keep' | 'f32' | 'f16' | 'bf16';
  metadata?: Record<string, string>;
  onProgress?: Progress;
}

function outDtype(stored: DType, opt: ExportOptions['dtype']): DType {
  if (!opt || opt === 'keep') return stored;
  return stored === 'f32' || stored === 'f16' || stored === 'bf16' ? opt : stored;
}

const COMPONENTS: Component[] = ['unet', 'vae', 'text_encoder'];

/** One original-layout (CompVis/LDM) .safetensors with model.diffusion_model., first_stage_model., cond_stage_model.transformer. keys. */
export function writeSingleFile(
  path: string,
  sources: Record<Component, WeightSource>,
  configs: Pick<SD15Configs, Component>,
  opts: ExportOptions = {},
): void {
  const tensors: StreamedTensor[] = [];
  for (const c of COMPONENTS) {
    for (const e of keyMapFor(c, configs[c])) {
      const src = sources[c];
      const shape = e.conv1x1InOriginal ? [...e.shape, 1, 1] : e.shape;
      tensors.push({
        name: e.original,
        dtype: outDtype(src.dtype(e.diffusers), opts.dtype),
        shape,
        load: () => src.get(e.diffusers).reshape(shape),
      });
    }
  }
  writeSafetensorsStreaming(path, tensors, opts.metadata, opts.onProgress);
}

/** A diffusers folder (model_index.json, unet/, vae/, text_encoder/, scheduler/, tokenizer/ when given). */
export function writeDiffusersFolder(
  dir: string,
  sources: Record<Component, WeightSource>,
  configs: SD15Configs,
  opts: ExportOptions & { tokenizerDir?: string | null } = {},
): void {
  if (existsSync(join(dir, 'model_index.json'))) throw new RedlineError('output_exists', `${dir} already holds a model.`, 'Choose a new folder.');
  mkdirSync(dir, { recursive: true });
  const files: Record<Component, string> = { unet: 'diffusion_pytorch_model.safetensors', vae: 'diffusion_pytorch_model.safetensors', text_encoder: 'model.safetensors' };
  const classes: Record<Component, [string, string]> = {
    unet: ['diffusers', 'UNet2DConditionModel'],
    vae: ['diffusers', 'AutoencoderKL'],
    text_encoder: ['transformers', 'CLIPTextModel'],
  };
  let done = 0;
  const total = COMPONENTS.reduce((n, c) => n + keyMapFor(c, configs[c]).length, 0);
  for (const c of COMPONENTS) {
    mkdirSync(join(dir, c), { recursive: true });
    const src = sources[c];
    const tensors = keyMapFor(c, configs[c]).map<StreamedTensor>((e) => ({ name: e.diffusers, dtype: outDtype(src.dtype(e.diffusers), opts.dtype), shape: e.shape, load: () => src.get(e.diffusers) }));
    writeSafetensorsStreaming(join(dir, c, files[c]), tensors, { format: 'pt', ...opts.metadata }, (_d, _t, name) => opts.onProgress?.(++done, total, `${c}/${name}`));
    const cfg: Record<string, unknown> = { ...configs[c] };
    if (c === 'text_encoder') cfg.architectures = ['CLIPTextModel'];
    else cfg._class_name = classes[c][1];
    writeFileSync(join(dir, c, 'config.json'), JSON.stringify(cfg, null, 2) + '\n');
  }
  mkdirSync(join(dir, 'scheduler'), { recursive: true });
  writeFileSync(join(dir, 'scheduler', 'scheduler_config.json'), JSON.stringify(configs.scheduler, null, 2) + '\n');
  const index: Record<string, unknown> = {
    _class_name: 'StableDiffusionPipeline',
    feature_extractor: [null, null],
    requires_safety_checker: false,
    safety_checker: [null, null],
    scheduler: ['diffusers', String(configs.scheduler._class_name ?? 'PNDMScheduler')],
    text_encoder: classes.text_encoder,
    unet: classes.unet,
    vae: classes.vae,
  };
  if (opts.tokenizerDir) {
    mkdirSync(join(dir, 'tokenizer'), { recursive: true });
    for (const f of ['vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json']) {
      if (existsSync(join(opts.tokenizerDir, f))) copyFileSync(join(opts.tokenizerDir, f), join(dir, 'tokenizer', f));
    }
    index.tokenizer = ['transformers', 'CLIPTokenizer'];
  }
  writeFileSync(join(dir, 'model_index.json'), JSON.stringify(index, null, 2) + '\n');
}
