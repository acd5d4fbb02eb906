// Output in kohya's LoRA format (networks.lora): lora_unet_* / lora_te_* modules with
// lora_down / lora_up / alpha, and the ss_* training metadata kohya's train_network.py
// writes, plus sshs_model_hash / sshs_legacy_hash as kohya precomputes them for A1111's
// additional-networks extension (hashes of the file written with the ss_* keys only), and
// Redline's own redline.category when the run declares the content category.
import { mkdtempSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CATEGORY_METADATA_KEY, sidecarCategoryProblem } from '../../adapters/registry.ts';
import { RedlineError } from '../../errors.ts';
import { computeFileHashes } from '../../models/checkpoint/hash.ts';
import { writeSafetensors } from '../../tensor/safetensors.ts';
import { Tensor } from '../../tensor/tensor.ts';
import type { LoraTarget } from '../step/index.ts';

/** PEFT module key ('unet.down_blocks.0...to_q', 'text_encoder.text_model...q_proj') ->
 * kohya module name ('lora_unet_down_blocks_0_..._to_q', 'lora_te_text_model_..._q_proj'). */
export function kohyaModuleName(peftKey: string): string {
  const m = /^(unet|text_encoder)\.(.+)$/.exec(peftKey);
  if (!m) throw new RedlineError('lora_key', `"${peftKey}" is not a PEFT module key (unet.<module> or text_encoder.<module>).`);
  return `${m[1] === 'unet' ? 'lora_unet' : 'lora_te'}_${m[2]!.replace(/\./g, '_')}`;
}

/** The kohya tensors of a LoRA (f32; lora_down = PEFT A, lora_up = PEFT B). Conv targets
 * keep kohya's conv layout: lora_down [r, in, kh, kw] (1x1, or 3x3 for LoCon), lora_up
 * [out, r, 1, 1]. */
export function kohyaTensors(targets: readonly LoraTarget[], params: ReadonlyMap<string, Float32Array>): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const t of targets) {
    const a = params.get(`${t.key}.lora_A.weight`);
    const b = params.get(`${t.key}.lora_B.weight`);
    if (!a || !b) throw new RedlineError('lora_key', `no LoRA values for ${t.key}.`);
    const name = kohyaModuleName(t.key);
    const conv = t.shape.length === 4;
    const fanIn = t.shape.slice(1).reduce((p, q) => p * q, 1);
    out.set(`${name}.lora_down.weight`, new Tensor('f32', conv ? [t.rank, t.shape[1]!, t.shape[2]!, t.shape[3]!] : [t.rank, fanIn], new Float32Array(a)));
    out.set(`${name}.lora_up.weight`, new Tensor('f32', conv ? [t.shape[0]!, t.rank, 1, 1] : [t.shape[0]!, t.rank], new Float32Array(b)));
    out.set(`${name}.alpha`, new Tensor('f32', [], Float32Array.of(t.alpha)));
  }
  return out;
}

/**
 * Writes the LoRA with `ss_*` metadata and kohya's precomputed sshs_* hashes. The file is
 * written under a temporary name and renamed, so a reader never sees half a file.
 * `category` (the training config's, e.g. graphic-injury) goes into CATEGORY_METADATA_KEY:
 * the file itself then says it is graded, so a copy that lost its sidecar NAME.json is
 * refused rather than run ungraded. Like kohya's modelspec.* keys it is left out of the
 * sshs_* hashes, which cover the ss_* keys only.
 */
export async function saveKohyaLora(path: string, tensors: Map<string, Tensor>, ssMetadata: Record<string, string>, redline: { category?: string | null } = {}): Promise<{ modelHash: string; legacyHash: string }> {
  for (const k of Object.keys(ssMetadata)) if (!k.startsWith('ss_')) throw new Error(`metadata key ${k} is not an ss_ key`);
  const category = redline.category ?? null;
  const bad = category === null ? null : sidecarCategoryProblem(category);
  if (bad) throw new RedlineError('train_config', `The adapter's ${bad.problem}.`, 'Set category in the training config to a known category, or leave it out.');
  const dir = mkdtempSync(join(tmpdir(), 'redline-lora-'));
  try {
    const probe = join(dir, 'ss-only.safetensors');
    writeSafetensors(probe, tensors, ssMetadata);
    const h = await computeFileHashes(probe);
    const modelHash = h.addnet!;
    const legacyHash = h.legacy;
    const tmp = `${path}.${process.pid}.tmp`;
    writeSafetensors(tmp, tensors, { ...ssMetadata, sshs_model_hash: modelHash, sshs_legacy_hash: legacyHash, ...(category === null ? {} : { [CATEGORY_METADATA_KEY]: category }) });
    renameSync(tmp, path);
    return { modelHash, legacyHash };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
