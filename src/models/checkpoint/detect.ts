// What a model file or folder is, decided from its bytes and tensor names, before anything
// is loaded: SD 1.x is loaded; other families, standalone VAEs, LoRAs and pickles are named
// and refused, never half-loaded.
import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { basename, extname } from 'node:path';
import { RedlineError } from '../../errors.ts';

export type ModelFamily = 'sd1' | 'sd2' | 'sdxl' | 'sd3' | 'flux' | 'unknown';

export const FAMILY_NAMES: Record<ModelFamily, string> = {
  sd1: 'Stable Diffusion 1.x',
  sd2: 'Stable Diffusion 2.x',
  sdxl: 'Stable Diffusion XL',
  sd3: 'Stable Diffusion 3',
  flux: 'Flux',
  unknown: 'an unrecognised model',
};

export type FileKind = 'safetensors' | 'pickle' | 'other';

const PICKLE_EXTENSIONS = new Set(['.ckpt', '.pt', '.pth', '.bin', '.pkl', '.pickle']);

/** Looks at the first bytes: torch.save zip archives start with PK, raw pickles with 0x80 <protocol>. */
export function sniffFileKind(path: string): FileKind {
  const head = Buffer.alloc(16);
  const fd = openSync(path, 'r');
  let n: number;
  try {
    n = readSync(fd, head, 0, 16, 0);
  } finally {
    closeSync(fd);
  }
  if (n >= 4 && head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04) return 'pickle';
  if (n >= 2 && head[0] === 0x80 && head[1]! >= 2 && head[1]! <= 5) return 'pickle';
  if (n >= 9) {
    const len = head.readBigUInt64LE(0);
    const size = statSync(path).size;
    // A safetensors header is JSON ('{', possibly after spaces) whose length fits the file.
    if (len > 1n && len <= BigInt(size - 8) && (head[8] === 0x7b || head[8] === 0x20)) return 'safetensors';
  }
  if (PICKLE_EXTENSIONS.has(extname(path).toLowerCase())) return 'pickle';
  return 'other';
}

export function pickleRefusal(path: string): RedlineError {
  return new RedlineError(
    'pickle_refused',
    `${basename(path)} is a PyTorch pickle file (.ckpt/.pt/.bin); Redline does not open pickles, because unpickling a file can run arbitrary code.`,
    'Convert it to .safetensors on a machine where you trust the file, e.g. with diffusers: ' +
      '`python scripts/convert_original_stable_diffusion_to_diffusers.py --checkpoint_path FILE.ckpt --dump_path OUT_DIR --to_safetensors` ' +
      "(then give Redline OUT_DIR), or with A1111's Checkpoint Merger (Checkpoint format: safetensors), or download the .safetensors release of the model.",
  );
}

/** Refuses anything that is not a safetensors file, naming what it is. */
export function requireSafetensors(path: string): void {
  const kind = sniffFileKind(path);
  if (kind === 'pickle') throw pickleRefusal(path);
  if (kind !== 'safetensors') {
    throw new RedlineError('not_safetensors', `${basename(path)} is not a safetensors file.`, 'Redline reads model weights from .safetensors files and diffusers folders.');
  }
}

export type CheckpointKind = 'checkpoint' | 'lora' | 'vae' | 'unknown';

/** Classifies a single safetensors file by its tensor names (the header only). */
export function classifyKeys(keys: string[]): { kind: CheckpointKind; family: ModelFamily } {
  const has = (p: string): boolean => keys.some((k) => k.startsWith(p));
  const anyIncludes = (p: string): boolean => keys.some((k) => k.includes(p));
  const isLoraKey = (k: string): boolean =>
    /^lora_(unet|te\d?)_/.test(k) || /\.(lora_[AB]|lora_down|lora_up|hada_w[12]_[ab]|lokr_w[12](_[ab])?)(\.weight)?$/.test(k);
  if (keys.length > 0 && keys.filter(isLoraKey).length >= keys.length / 2) return { kind: 'lora', family: loraFamily(keys) };

  if (anyIncludes('double_blocks.') || anyIncludes('single_blocks.')) return { kind: 'checkpoint', family: 'flux' };
  if (has('model.diffusion_model.joint_blocks.') || has('joint_blocks.')) return { kind: 'checkpoint', family: 'sd3' };
  if (has('conditioner.embedders.') || has('model.diffusion_model.label_emb.')) return { kind: 'checkpoint', family: 'sdxl' };
  if (has('cond_stage_model.model.')) return { kind: 'checkpoint', family: 'sd2' };
  if (has('model.diffusion_model.')) {
    return { kind: 'checkpoint', family: has('cond_stage_model.transformer.') || !has('cond_stage_model.') ? 'sd1' : 'unknown' };
  }
  if (has('encoder.down.') && has('decoder.up.') && !has('model.')) return { kind: 'vae', family: 'unknown' };
  return { kind: 'unknown', family: 'unknown' };
}

/** LoRA family from key names alone (the caller also checks shapes against the model). */
export function loraFamily(keys: string[]): ModelFamily {
  const any = (re: RegExp): boolean => keys.some((k) => re.test(k));
  if (any(/^lora_te[12]_/) || any(/transformer_blocks[._][1-9]/) || any(/add_embedding|label_emb|text_encoder_2\./)) return 'sdxl';
  if (any(/double_blocks|single_blocks|joint_blocks|transformer_blocks_\d+_(ff_context|attn_add)/)) return 'flux';
  if (any(/^lora_te_text_model_encoder_layers_(1[2-9]|2\d)_/) || any(/encoder\.layers\.(1[2-9]|2\d)\./)) return 'sd2';
  return 'sd1';
}

export function familyRefusal(what: string, family: ModelFamily): RedlineError {
  return new RedlineError(
    'model_family_unsupported',
    `${what} is ${FAMILY_NAMES[family]} ${family === 'unknown' ? '' : 'model '}and Redline runs Stable Diffusion 1.x models only.`.replace('  ', ' '),
    'Use an SD 1.5-family checkpoint (single-file .safetensors or a diffusers folder).',
  );
}
