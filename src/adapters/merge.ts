// `redline merge` as a library call: bake adapters at chosen strengths into a base
// checkpoint and write it as a single-file SD 1.5 checkpoint (CompVis layout) or a diffusers
// folder. Untouched weights stream from the base file to the output.
import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import { RedlineError } from '../errors.ts';
import { openCheckpoint } from '../models/checkpoint/load.ts';
import { writeDiffusersFolder, writeSingleFile } from '../models/checkpoint/write.ts';
import { fusedSources } from './fuse.ts';
import { fuseAdaptersFast } from './fuse-ort.ts';
import { describeMatch, loadAdapter } from './load.ts';
import { buildModuleIndex } from './module-index.ts';
import { adapterMetadata, adapterName, CATEGORY_METADATA_KEY, readSidecar, sidecarCategoryProblem } from './registry.ts';
import { cleanText } from './text.ts';

export interface MergeSpec {
  model: string;
  /** Config folder for a single-file base whose group/head counts are not SD 1.5's. */
  configs?: string;
  loras: Array<{ path: string; unet: number; te: number }>;
  out: string;
  format: 'single-file' | 'diffusers';
  dtype?: 'keep' | 'f32' | 'f16' | 'bf16';
  /** Tokenizer files to copy into a diffusers output (defaults to the base folder's). */
  tokenizerDir?: string;
  overwrite?: boolean;
  onStatus?: (line: string) => void;
  onProgress?: (done: number, total: number) => void;
}

export interface MergeReport {
  out: string;
  adapters: Array<{ name: string; unet: number; te: number; match: string; unmatchedKeys: number }>;
  fusedWeights: number;
}

/** `FILE:STRENGTH[:TE_STRENGTH]`, parsed from the right so paths may contain ':'. */
export function parseLoraSpec(spec: string): { path: string; unet: number; te: number } {
  const parts = spec.split(':');
  const nums: number[] = [];
  while (parts.length > 1 && nums.length < 2 && /^-?(\d+\.?\d*|\.\d+)(e-?\d+)?$/i.test(parts[parts.length - 1]!)) nums.unshift(Number(parts.pop()));
  const path = parts.join(':');
  if (!path) throw new RedlineError('bad_lora_spec', `"${spec}" names no file.`, 'Write --lora FILE:STRENGTH[:TE_STRENGTH], e.g. --lora blood.safetensors:0.7');
  const unet = nums[0] ?? 1;
  const te = nums[1] ?? unet;
  for (const v of [unet, te]) {
    if (!Number.isFinite(v) || Math.abs(v) > 10) throw new RedlineError('bad_lora_spec', `strength ${v} in "${spec}" is out of range.`, 'Strengths are numbers between -10 and 10.');
  }
  return { path, unet, te };
}

/**
 * Refuses to bake in an adapter whose sidecar or metadata declares a category. Every known
 * category is governed by the policy (graphic-injury adapters run at the strength of the
 * caller's intensity level, under its CFG ceiling and SLD); merged into a checkpoint, the
 * adapter's effect would be in every generation at the merge strength, in a model that
 * declares nothing, past every cap. An adapter whose sidecar is broken, or whose category is
 * unknown or hard-blocked, is refused as readSidecar refuses it everywhere else.
 */
export function assertMergeable(adapterPath: string): void {
  const name = adapterName(adapterPath);
  const metadata = adapterMetadata(adapterPath);
  const declared = metadata[CATEGORY_METADATA_KEY];
  // A known category in the metadata is reason enough: the refusal should say why merging is
  // refused, not that a sidecar is missing.
  if (declared !== undefined && sidecarCategoryProblem(declared) === null) throw gradedMergeRefusal(name, declared, `its metadata (${CATEGORY_METADATA_KEY})`);
  const { sidecar } = readSidecar(adapterPath, metadata);
  if (sidecar?.category) throw gradedMergeRefusal(name, sidecar.category, `its sidecar ${name}.json`);
}

function gradedMergeRefusal(name: string, category: string, where: string): RedlineError {
  return new RedlineError(
    'adapter_graded_merge',
    `Adapter "${name}" is not merged: ${where} declares the category "${cleanText(category, 40)}", which the safety policy grades. Baked into a checkpoint it would act on every image at the merge strength, in a model that declares no category, so no intensity level, cap or safety guidance would apply to it.`,
    `Use it at run time instead: keep ${name}.safetensors and its sidecar in the LoRA folder and write <lora:${name}:1> in the prompt (redline generate or the server), where the policy gives it the strength of the caller's intensity level. Only adapters that declare no category can be merged.`,
  );
}

export async function mergeToFile(spec: MergeSpec): Promise<MergeReport> {
  const status = spec.onStatus ?? (() => {});
  if (!spec.loras.length) throw new RedlineError('no_adapters', 'nothing to merge: give at least one --lora.');
  // Before anything is opened or written: a refused adapter leaves no output behind.
  for (const l of spec.loras) assertMergeable(l.path);
  if (existsSync(spec.out) && !spec.overwrite) throw new RedlineError('output_exists', `${spec.out} already exists.`, 'Choose another name or pass --force.');
  if (spec.format === 'single-file' && !/\.safetensors$/i.test(spec.out)) {
    throw new RedlineError('bad_output', `${spec.out}: a single-file checkpoint must be written as .safetensors.`);
  }
  const ckpt = openCheckpoint(spec.model, spec.configs ? { configs: spec.configs } : {});
  try {
    status(`base: ${basename(spec.model)} (${ckpt.format}, ${ckpt.configSource === 'folder' ? 'configs from the folder' : ckpt.configSource})`);
    const index = buildModuleIndex(ckpt);
    const loaded = spec.loras.map((l) => {
      const adapter = loadAdapter(l.path, index);
      const match = describeMatch(adapter);
      status(`${match} (unet ${l.unet}, te ${l.te})`);
      return { adapter, unet: l.unet, te: l.te };
    });
    status('fusing...');
    const fused = await fuseAdaptersFast(ckpt.components, loaded, { dtype: spec.dtype === 'f32' ? 'f32' : 'keep' });
    const fusedCount = fused.unet.size + fused.text_encoder.size;
    const over = fusedSources(ckpt.components, fused);
    const sources = { unet: over.unet, text_encoder: over.text_encoder, vae: ckpt.components.vae };
    const metadata = {
      'redline.merge': JSON.stringify({
        base: basename(spec.model),
        adapters: loaded.map((l) => ({ name: l.adapter.name, unet: l.unet, te: l.te })),
      }),
    };
    status(`writing ${spec.format === 'single-file' ? 'single-file checkpoint' : 'diffusers folder'} ${spec.out}`);
    const progress = spec.onProgress ? (d: number, t: number) => spec.onProgress!(d, t) : undefined;
    if (spec.format === 'single-file') {
      writeSingleFile(spec.out, sources, ckpt.configs, { dtype: spec.dtype, metadata, onProgress: progress });
    } else {
      writeDiffusersFolder(spec.out, sources, ckpt.configs, { dtype: spec.dtype, metadata, onProgress: progress, tokenizerDir: spec.tokenizerDir ?? ckpt.tokenizerDir });
    }
    return {
      out: spec.out,
      adapters: loaded.map((l) => ({ name: l.adapter.name, unet: l.unet, te: l.te, match: describeMatch(l.adapter), unmatchedKeys: l.adapter.unmatchedKeys.length })),
      fusedWeights: fusedCount,
    };
  } finally {
    ckpt.close();
  }
}
