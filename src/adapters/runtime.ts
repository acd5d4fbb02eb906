// What the engine needs to run an adapter inside the graph with its strength as an input
// (no re-merge when the strength changes, no session rebuild when an adapter with the same
// targets and ranks is swapped in). See README.md for how the graph side uses it.
import { as2d } from './delta.ts';
import { type AdapterModule, type LoadedAdapter, moduleDelta } from './load.ts';
import type { AdaptedComponent } from './module-index.ts';

export interface RuntimeAdapterModule {
  component: AdaptedComponent;
  /** diffusers module path, e.g. `down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q`. */
  module: string;
  /** Shape of the adapted weight ([out, in] or [out, in, kh, kw]). */
  targetShape: number[];
  /**
   * - 'matmul': y += strength * scale * (x @ down^T) @ up^T, x flattened over the input
   *   features (Linear, or 1x1 conv over channels). down [rank, in], up [out, rank].
   * - 'conv': y += strength * scale * conv1x1(conv(x, down), up), where `down` is a conv kernel
   *   [rank, in, kh, kw] applied with the target conv's stride and padding (kohya LoCon).
   * - 'dense': W_eff = W + strength * scale * delta (LoHa, LoKr, LoCon with a CP mid factor,
   *   full diffs): delta has the target's shape.
   */
  form: 'matmul' | 'conv' | 'dense';
  down?: Float32Array;
  downShape?: number[];
  up?: Float32Array;
  upShape?: number[];
  delta?: Float32Array;
  /** alpha / rank (1 where the kind has no rank scaling); the graph multiplies it by its strength input. */
  scale: number;
  rank: number | null;
}

function describe(m: AdapterModule): RuntimeAdapterModule {
  const common = { component: m.target.component, module: m.target.module, targetShape: [...m.target.shape], scale: m.scale, rank: m.rank };
  if ((m.kind === 'lora' || m.kind === 'locon') && !m.parts.lora_mid) {
    const down = m.parts.lora_down!;
    const up = as2d(m.parts.lora_up!);
    const spatial = down.shape.length === 4 && (down.shape[2] !== 1 || down.shape[3] !== 1);
    if (spatial) {
      return { ...common, form: 'conv', down: down.data, downShape: [...down.shape], up: up.data, upShape: [up.rows, up.cols] };
    }
    const d = as2d(down);
    return { ...common, form: 'matmul', down: d.data, downShape: [d.rows, d.cols], up: up.data, upShape: [up.rows, up.cols] };
  }
  return { ...common, form: 'dense', delta: moduleDelta(m).data };
}

export function runtimeModules(adapter: LoadedAdapter): RuntimeAdapterModule[] {
  return adapter.modules.map(describe);
}

/**
 * A key that is equal for two adapters exactly when one can replace the other in a built
 * graph (same modules, forms and factor shapes): swapping then only feeds new tensors.
 */
export function runtimeSignature(mods: RuntimeAdapterModule[]): string {
  return mods
    .map((m) => `${m.component}:${m.module}:${m.form}:${(m.downShape ?? []).join('x')}:${(m.upShape ?? []).join('x')}`)
    .sort()
    .join('|');
}
