// Baking adapters into base weights (the paper's "model compilation" and A1111's merge):
// W' = W + sum_k strength_k * scale_k * delta_k, with a text-encoder and a UNet strength per
// adapter. Only the affected weights are copied; everything else stays on disk.
import { RedlineError } from '../errors.ts';
import { OverlayWeightSource, type WeightSource } from '../models/checkpoint/weight-source.ts';
import { Tensor } from '../tensor/tensor.ts';
import { moduleDelta, type LoadedAdapter } from './load.ts';
import type { AdaptedComponent } from './module-index.ts';

export interface AdapterStrength {
  adapter: LoadedAdapter;
  /** Text-encoder strength (A1111 `<lora:name:te:unet>` first number). */
  te: number;
  /** UNet strength. */
  unet: number;
}

export interface FuseOptions {
  /** Output dtype of the fused weights: the base weight's own (default) or f32. */
  dtype?: 'keep' | 'f32';
  onProgress?: (done: number, total: number) => void;
}

export type FusedWeights = Record<AdaptedComponent, Map<string, Tensor>>;

type Planned = LoadedAdapter['modules'][number];

export interface FuseWork {
  component: AdaptedComponent;
  weight: string;
  items: Array<{ coef: number; m: Planned; adapter: string }>;
}

export function checkStrengths(adapters: AdapterStrength[]): void {
  for (const a of adapters) {
    for (const [what, v] of [['te', a.te], ['unet', a.unet]] as const) {
      if (!Number.isFinite(v)) throw new RedlineError('adapter_strength_invalid', `${a.adapter.name}: ${what} strength ${v} is not a finite number.`);
    }
  }
}

/** The work grouped by target weight, so each base weight is read and converted once. */
export function planFuse(weights: Record<AdaptedComponent, WeightSource>, adapters: AdapterStrength[]): Map<string, FuseWork> {
  const work = new Map<string, FuseWork>();
  for (const { adapter, te, unet } of adapters) {
    for (const m of adapter.modules) {
      const strength = m.target.component === 'text_encoder' ? te : unet;
      if (strength === 0) continue;
      const id = `${m.target.component}:${m.target.weight}`;
      const w = work.get(id) ?? { component: m.target.component, weight: m.target.weight, items: [] };
      w.items.push({ coef: strength * m.scale, m, adapter: adapter.name });
      work.set(id, w);
    }
  }
  for (const { component, weight, items } of work.values()) {
    const src = weights[component];
    if (!src.has(weight)) {
      throw new RedlineError('adapter_no_match', `${items[0]!.adapter} targets ${component} weight ${weight}, which this model does not have.`);
    }
    const shape = src.shape(weight);
    for (const { m, adapter } of items) {
      if (m.target.shape.join(',') !== shape.join(',')) {
        throw new RedlineError('adapter_shape_mismatch', `${adapter}: ${component} ${weight} is [${shape.join(', ')}] in this model, the adapter was matched against [${m.target.shape.join(', ')}].`, 'Load the adapter against the model it is fused into.');
      }
    }
  }
  return work;
}

/** W + sum coef * delta for one weight, in JS (float64 sums, one rounding per element). */
export function fuseOneWeight(base: Tensor, shape: number[], work: FuseWork, opts: FuseOptions): Tensor {
  const w = new Float32Array(base.toFloat32()); // a copy: never write into the source
  for (const { coef, m, adapter } of work.items) {
    const d = moduleDelta(m, `${adapter}: ${work.component} module ${m.target.module}`).data;
    for (let i = 0; i < w.length; i++) w[i] = w[i]! + coef * d[i]!;
  }
  const fused = new Tensor('f32', shape, w);
  const keep = opts.dtype !== 'f32' && (base.dtype === 'f16' || base.dtype === 'bf16');
  return keep ? fused.to(base.dtype as 'f16' | 'bf16') : fused;
}

/**
 * Reference implementation in plain JS (synchronous). fuseAdaptersFast (fuse-ort.ts) gives
 * the same result with ONNX Runtime's GEMM and is what merges of full-size models use.
 */
export function fuseAdapters(
  weights: Record<AdaptedComponent, WeightSource>,
  adapters: AdapterStrength[],
  opts: FuseOptions = {},
): FusedWeights {
  checkStrengths(adapters);
  const work = planFuse(weights, adapters);
  const out: FusedWeights = { unet: new Map(), text_encoder: new Map() };
  let done = 0;
  for (const item of work.values()) {
    const src = weights[item.component];
    out[item.component].set(item.weight, fuseOneWeight(src.get(item.weight), src.shape(item.weight), item, opts));
    opts.onProgress?.(++done, work.size);
  }
  return out;
}

/** The model's components with the fused weights laid over them (lazy for the rest). */
export function fusedSources<S extends Record<AdaptedComponent, WeightSource>>(weights: S, fused: FusedWeights): Record<AdaptedComponent, WeightSource> {
  return {
    unet: new OverlayWeightSource(weights.unet, fused.unet),
    text_encoder: new OverlayWeightSource(weights.text_encoder, fused.text_encoder),
  };
}
