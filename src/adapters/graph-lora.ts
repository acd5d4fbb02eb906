// Runtime adapters: the LoRA branch lives in the graph and its factors and strength are
// graph inputs, so a strength change is a new scalar feed and an adapter with the same
// targets, forms and ranks is a new set of feeds: neither rebuilds the session. The graph
// itself depends only on the adapters' runtime signatures (`slotSignature`).
//
// Inputs per slot k (order of `slots`) and adapted module M (diffusers path):
//   lora.<k>.strength_te / lora.<k>.strength_unet   f32 scalar, the component's strength
//   'matmul' on a Linear:   lora.<k>.M.down [in, rank] (down^T), lora.<k>.M.up [rank, out] (scale * up^T)
//   'matmul' on a 1x1 conv: lora.<k>.M.down [rank, in, 1, 1],   lora.<k>.M.up [out, rank, 1, 1] (scale * up)
//   'conv' (LoCon 3x3):     lora.<k>.M.down [rank, in, kh, kw], lora.<k>.M.up [out, rank, 1, 1] (scale * up)
//   'dense' (LoHa, LoKr, CP LoCon, full diffs): lora.<k>.M.delta, target shape (scale * delta)
// The adapter's alpha/rank scale is folded into `up`/`delta` when the feeds are prepared
// (once per adapter), so the graph multiplies by the strength only, on the rank-sized
// intermediate where there is one.
import * as ort from 'onnxruntime-node';
import { RedlineError } from '../errors.ts';
import type { Graph, Value } from '../graph/graph.ts';
import * as op from '../graph/ops.ts';
import type { ModuleHook } from '../models/weights.ts';
import { type Feed, type Session, toOrtTensor } from '../runtime/session.ts';
import { Tensor } from '../tensor/tensor.ts';
import type { LoadedAdapter } from './load.ts';
import type { AdaptedComponent } from './module-index.ts';
import { type RuntimeAdapterModule, runtimeModules, runtimeSignature } from './runtime.ts';

/** What a graph needs to know about one adapted module (no factor data). */
export interface SlotModule {
  module: string;
  form: RuntimeAdapterModule['form'];
  targetShape: number[];
  downShape?: number[];
  upShape?: number[];
}

export function strengthInputName(slot: number, component: AdaptedComponent): string {
  return `lora.${slot}.strength_${component === 'unet' ? 'unet' : 'te'}`;
}

function isConvTarget(m: SlotModule): boolean {
  return m.targetShape.length === 4;
}

/** Graph input shapes of one module's factors, in the layout documented above. */
function factorShapes(m: SlotModule): { down?: number[]; up?: number[]; delta?: number[] } {
  if (m.form === 'dense') return { delta: [...m.targetShape] };
  const [rank, inFeatures] = m.downShape as [number, number];
  const out = m.upShape![0]!;
  if (m.form === 'conv') return { down: [...m.downShape!], up: [out, rank, 1, 1] };
  if (isConvTarget(m)) return { down: [rank, inFeatures, 1, 1], up: [out, rank, 1, 1] };
  return { down: [inFeatures, rank], up: [rank, out] };
}

/**
 * A ModuleHook that adds, for every slot, the branches of its modules to the graph being
 * built for `component` (inputs are created in that graph on first use). After building, `unvisited()` lists slot modules the builder never
 * reached (a target the graph does not have: a bug or a foreign adapter, never ignored).
 */
export function runtimeModuleHook(component: AdaptedComponent, slots: SlotModule[][]): ModuleHook & { unvisited(): string[] } {
  const bySlot = slots.map((mods) => new Map(mods.map((m) => [m.module, m])));
  const strengths = new Map<number, Value>();
  const visited = new Set<string>();
  let graph: Graph | undefined;
  const strength = (k: number): Value => {
    let v = strengths.get(k);
    if (!v) {
      v = graph!.input(strengthInputName(k, component), 'f32', []);
      strengths.set(k, v);
    }
    return v;
  };
  const factor = (k: number, m: SlotModule, part: 'down' | 'up' | 'delta'): Value =>
    graph!.input(`lora.${k}.${m.module}.${part}`, 'f32', factorShapes(m)[part]!);
  return {
    weight(module, w) {
      graph ??= w.graph;
      let out = w;
      bySlot.forEach((mods, k) => {
        const m = mods.get(module);
        if (!m || m.form !== 'dense') return;
        visited.add(`${k}:${module}`);
        out = op.add(out, op.mul(factor(k, m, 'delta'), strength(k)));
      });
      return out;
    },
    output(module, x, y, conv) {
      graph ??= y.graph;
      let out = y;
      bySlot.forEach((mods, k) => {
        const m = mods.get(module);
        if (!m || m.form === 'dense') return;
        visited.add(`${k}:${module}`);
        const branch = graph!.scope(`lora.${k}.${module}`, () => {
          if (conv) {
            const down = factor(k, m, 'down');
            const kernel = down.shape[2] as number;
            // A 1x1 down factor on a 1x1 target takes the target's zero pads; a LoCon
            // kernel has the target's own size, so the target's pads and strides fit it.
            const pads = kernel === 1 ? [0, 0, 0, 0] : conv.pads;
            const h = op.mul(op.conv(x, down, null, { strides: conv.strides, pads }), strength(k));
            return op.conv(h, factor(k, m, 'up'));
          }
          if (isConvTarget(m)) throw new RedlineError('adapter_shape_mismatch', `${module}: a conv adapter reached a linear module.`);
          return op.matmul(op.mul(op.matmul(x, factor(k, m, 'down')), strength(k)), factor(k, m, 'up'));
        });
        out = op.add(out, branch);
      });
      return out;
    },
    unvisited() {
      const missing: string[] = [];
      bySlot.forEach((mods, k) => {
        for (const name of mods.keys()) if (!visited.has(`${k}:${name}`)) missing.push(name);
      });
      return missing;
    },
  };
}

/** One adapter, prepared for feeding: its modules split by component, each component's
 * signature, and the factor tensors in the graph's layout (scale folded in). Built once per
 * loaded adapter; feeding it at another strength or slot copies nothing. */
export class RuntimeAdapterFeeds {
  readonly modules: Record<AdaptedComponent, SlotModule[]>;
  readonly signatures: Record<AdaptedComponent, string>;
  private readonly tensors: Record<AdaptedComponent, Array<{ module: string; part: 'down' | 'up' | 'delta'; tensor: ort.Tensor }>>;

  constructor(readonly adapter: LoadedAdapter) {
    const rt = runtimeModules(adapter);
    this.modules = { unet: [], text_encoder: [] };
    this.tensors = { unet: [], text_encoder: [] };
    for (const m of rt) {
      const slot: SlotModule = { module: m.module, form: m.form, targetShape: m.targetShape, ...(m.downShape ? { downShape: m.downShape } : {}), ...(m.upShape ? { upShape: m.upShape } : {}) };
      this.modules[m.component].push(slot);
      const shapes = factorShapes(slot);
      const list = this.tensors[m.component];
      const add = (part: 'down' | 'up' | 'delta', data: Float32Array): void => {
        list.push({ module: m.module, part, tensor: toOrtTensor(new Tensor('f32', shapes[part]!, data)) });
      };
      if (m.form === 'dense') {
        add('delta', scaled(m.delta!, m.scale));
        continue;
      }
      const [rank, inFeatures] = m.downShape as [number, number];
      const out = m.upShape![0]!;
      if (m.form === 'conv' || isConvTarget(slot)) {
        add('down', m.down!);
        add('up', scaled(m.up!, m.scale));
      } else {
        add('down', transposed(m.down!, rank, inFeatures, 1));
        add('up', transposed(m.up!, out, rank, m.scale));
      }
    }
    this.signatures = {
      unet: runtimeSignature(rt.filter((m) => m.component === 'unet')),
      text_encoder: runtimeSignature(rt.filter((m) => m.component === 'text_encoder')),
    };
  }

  /** Feeds for this adapter in slot `slot` of a `component` graph, at `strength`. */
  feeds(component: AdaptedComponent, slot: number, strength: number): Record<string, Feed> {
    const out: Record<string, Feed> = { [strengthInputName(slot, component)]: new ort.Tensor('float32', Float32Array.of(strength), []) };
    for (const t of this.tensors[component]) out[`lora.${slot}.${t.module}.${t.part}`] = t.tensor;
    return out;
  }
}

function scaled(a: Float32Array, s: number): Float32Array {
  if (s === 1) return a;
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! * s;
  return out;
}

/** [rows, cols] -> [cols, rows], times s. */
function transposed(a: Float32Array, rows: number, cols: number, s: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = a[r * cols + c]! * s;
  return out;
}

/** The adapters active on one component, in the slot order a graph is built for. */
export interface ComponentPlan {
  component: AdaptedComponent;
  /** Session cache key: the slots' signatures (empty: no adapter, the base graph). */
  key: string;
  slots: Array<{ feeds: RuntimeAdapterFeeds; strength: number }>;
}

/** Orders the adapters that act on `component` (non-zero strength, modules there) so that
 * the same set in another order maps to the same graph. */
export function planComponent(component: AdaptedComponent, adapters: Array<{ feeds: RuntimeAdapterFeeds; strength: number }>): ComponentPlan {
  const slots = adapters
    .filter((a) => a.strength !== 0 && a.feeds.modules[component].length > 0)
    .sort((a, b) => cmp(a.feeds.signatures[component], b.feeds.signatures[component]));
  return { component, key: slots.map((s) => s.feeds.signatures[component]).join('\u0001'), slots };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export function slotModules(plan: ComponentPlan): SlotModule[][] {
  return plan.slots.map((s) => s.feeds.modules[plan.component]);
}

export function planFeeds(plan: ComponentPlan): Record<string, Feed> {
  return Object.assign({}, ...plan.slots.map((s, k) => s.feeds.feeds(plan.component, k, s.strength))) as Record<string, Feed>;
}

/** A session plus fixed extra feeds (the adapter inputs): runs like the session it wraps. */
export class AdaptedSession {
  constructor(
    readonly session: Session,
    readonly extraFeeds: Record<string, Feed>,
  ) {}

  get ort(): Session['ort'] {
    return this.session.ort;
  }

  get provider(): Session['provider'] {
    return this.session.provider;
  }

  get fallbackReason(): string | undefined {
    return this.session.fallbackReason;
  }

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  get outputNames(): readonly string[] {
    return this.session.outputNames;
  }

  run(feeds: Record<string, Feed>, outputs?: readonly string[] | Record<string, Tensor>): Promise<Record<string, Tensor>> {
    return this.session.run({ ...feeds, ...this.extraFeeds }, outputs);
  }

  /** The wrapped session belongs to the model's session cache, which releases it. */
  release(): Promise<void> {
    return Promise.resolve();
  }
}
