// Which modules a LoRA trains, and the initial A/B tensors (PEFT init: A kaiming-uniform
// with a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)); B zero, so step 0 is the base).

import { RedlineError } from '../../errors.ts';
import { SafetensorsFile } from '../../tensor/safetensors.ts';
import { SeededRandom } from '../procedural/random.ts';
import type { LoraTarget, StepModel } from './graphs.ts';

/** 'attention': to_q/to_k/to_v/to_out.0 (diffusers train_text_to_image_lora);
 * 'transformer': every Linear / 1x1 conv of the transformer blocks incl. proj_in/proj_out
 * and feed-forward (kohya's LoRA default);
 * 'transformer+conv': also the 3x3 convs of the resnets (conv1, conv2) and of the
 * down/upsamplers (kohya LoCon: down is a conv with the target's kernel, stride and padding,
 * [rank, in, kh, kw]; up a 1x1 conv [out, rank, 1, 1]). */
export type UnetTargetSet = 'attention' | 'transformer' | 'transformer+conv';

export interface TargetSelection {
  unet: UnetTargetSet | 'none';
  /** Train the text encoder's attention and MLP projections too (kohya default). */
  textEncoder: boolean;
  rank: number;
  alpha: number;
}

const UNET_SETS: Record<Exclude<UnetTargetSet, 'transformer+conv'>, RegExp> = {
  attention: /\.attn[12]\.(to_q|to_k|to_v|to_out\.0)\.weight$/,
  transformer: /\.attentions\.\d+\.(proj_in|proj_out|transformer_blocks\.\d+\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj|ff\.net\.2))\.weight$/,
};
const UNET_CONV3X3 = /^(?:(?:down|up)_blocks\.\d+|mid_block)\.(?:resnets\.\d+\.conv[12]|(?:downsamplers|upsamplers)\.\d+\.conv)\.weight$/;
const TE_SET = /^text_model\.encoder\.layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|mlp\.(fc1|fc2))\.weight$/;

export function loraTargets(model: StepModel, sel: TargetSelection): LoraTarget[] {
  if (!Number.isInteger(sel.rank) || sel.rank < 1) throw new RedlineError('train_config', `LoRA rank must be a positive integer, got ${sel.rank}.`);
  if (!(sel.alpha > 0)) throw new RedlineError('train_config', `LoRA alpha must be positive, got ${sel.alpha}.`);
  const out: LoraTarget[] = [];
  const add = (component: LoraTarget['component'], weight: string, shape: number[], conv3x3 = false): void => {
    if (!conv3x3 && shape.length === 4 && (shape[2] !== 1 || shape[3] !== 1)) return;
    out.push({ key: `${component}.${weight.slice(0, -'.weight'.length)}`, component, weight, shape, rank: sel.rank, alpha: sel.alpha });
  };
  if (sel.unet !== 'none') {
    const re = UNET_SETS[sel.unet === 'transformer+conv' ? 'transformer' : sel.unet];
    const withConv = sel.unet === 'transformer+conv';
    if (!re) throw new RedlineError('train_config', `Unknown UNet LoRA target set "${String(sel.unet)}".`, 'Use "attention", "transformer" or "transformer+conv".');
    for (const n of model.components.unet.names()) {
      if (re.test(n)) add('unet', n, model.components.unet.shape(n));
      else if (withConv && UNET_CONV3X3.test(n)) add('unet', n, model.components.unet.shape(n), true);
    }
  }
  if (sel.textEncoder) for (const n of model.components.text_encoder.names()) if (TE_SET.test(n)) add('text_encoder', n, model.components.text_encoder.shape(n));
  return out;
}

/** Targets and tensors of an existing PEFT/diffusers LoRA file (keys
 * '<unet|text_encoder>.<module>.lora_{A,B}.weight'), to continue training it. */
export function loraFromPeftFile(path: string, model: StepModel, alpha?: number): { targets: LoraTarget[]; params: Map<string, Float32Array> } {
  const file = SafetensorsFile.open(path);
  const targets: LoraTarget[] = [];
  const params = new Map<string, Float32Array>();
  for (const key of file.keys()) {
    const m = /^(unet|text_encoder)\.(.+)\.lora_A\.weight$/.exec(key);
    if (!m) continue;
    const component = m[1] as LoraTarget['component'];
    const module = m[2]!;
    const bKey = `${component}.${module}.lora_B.weight`;
    if (!file.keys().includes(bKey)) throw new RedlineError('lora_file', `${path}: ${key} has no matching ${bKey}.`);
    const src = model.components[component];
    const weight = `${module}.weight`;
    if (!src.has(weight)) throw new RedlineError('lora_target', `${path}: module ${component}.${module} is not in the model.`);
    const rank = file.info(key).shape[0]!;
    targets.push({ key: `${component}.${module}`, component, weight, shape: src.shape(weight), rank, alpha: alpha ?? rank });
    params.set(key, file.getFloat32(key));
    params.set(bKey, file.getFloat32(bKey));
  }
  if (targets.length === 0) throw new RedlineError('lora_file', `${path} holds no PEFT LoRA tensors (keys '<unet|text_encoder>.<module>.lora_A.weight').`);
  return { targets, params };
}

/** Fresh A/B tensors for `targets` (B = 0), reproducible from `seed`. */
export function initLoraParams(targets: readonly LoraTarget[], seed: number): Map<string, Float32Array> {
  const rnd = new SeededRandom(seed);
  const out = new Map<string, Float32Array>();
  for (const t of targets) {
    const fanIn = t.shape.slice(1).reduce((a, b) => a * b, 1);
    const bound = 1 / Math.sqrt(fanIn);
    out.set(`${t.key}.lora_A.weight`, Float32Array.from({ length: t.rank * fanIn }, () => rnd.range(-bound, bound)));
    out.set(`${t.key}.lora_B.weight`, new Float32Array(t.shape[0]! * t.rank));
  }
  return out;
}
