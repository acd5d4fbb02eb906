// The adaptable modules of a loaded model and every name an adapter file may use for them.
// Names are built from the model's actual parameter names (never by guessing where
// underscores were dots): kohya writes `lora_unet_` / `lora_te_` + the diffusers module path
// with '.' -> '_', some older files use the CompVis path instead (lora_unet_input_blocks_1_1_
// proj_in), PEFT/diffusers files use the dotted path under `unet.` / `text_encoder.`, and
// text-encoder paths appear with and without the `text_model.` level.
import type { SD15Configs } from '../models/checkpoint/configs.ts';
import { ORIGINAL_PREFIX, keyMapFor } from '../models/checkpoint/sd15-keymap.ts';
import type { WeightSource } from '../models/checkpoint/weight-source.ts';

export type AdaptedComponent = 'unet' | 'text_encoder';

export interface TargetModule {
  component: AdaptedComponent;
  /** diffusers module path, e.g. `down_blocks.0.attentions.0.proj_in`. */
  module: string;
  /** The parameter the adapter changes: `${module}.weight`. */
  weight: string;
  /** Shape of that weight ([out, in] for Linear, [out, in, kh, kw] for Conv2d). */
  shape: number[];
}

export interface ModuleIndex {
  targets: Map<string, TargetModule>; // by `${component}:${module}`
  /** kohya-style flat name (lora_unet_..., lora_te_...) -> target. */
  byFlatName: Map<string, TargetModule>;
  /** `${component}:${dotted module path}` (with aliases) -> target. */
  byDottedName: Map<string, TargetModule>;
}

export interface AdaptableModel {
  components: { unet: WeightSource; text_encoder: WeightSource };
  /** Lets CompVis-named kohya files match; optional. */
  configs?: Pick<SD15Configs, 'unet' | 'text_encoder'>;
}

const FLAT_PREFIX: Record<AdaptedComponent, string> = { unet: 'lora_unet_', text_encoder: 'lora_te_' };

export function buildModuleIndex(model: AdaptableModel): ModuleIndex {
  const targets = new Map<string, TargetModule>();
  const byFlatName = new Map<string, TargetModule>();
  const byDottedName = new Map<string, TargetModule>();
  for (const component of ['unet', 'text_encoder'] as const) {
    const src = model.components[component];
    for (const name of src.names()) {
      if (!name.endsWith('.weight')) continue;
      const shape = src.shape(name);
      if (shape.length !== 2 && shape.length !== 4) continue; // norms and biases are not adapted here
      const module = name.slice(0, -'.weight'.length);
      const t: TargetModule = { component, module, weight: name, shape };
      targets.set(`${component}:${module}`, t);
      const aliases = [module];
      if (component === 'text_encoder' && module.startsWith('text_model.')) aliases.push(module.slice('text_model.'.length));
      for (const a of aliases) {
        byDottedName.set(`${component}:${a}`, t);
        byFlatName.set(FLAT_PREFIX[component] + a.replace(/\./g, '_'), t);
      }
    }
    const cfg = model.configs?.[component];
    if (cfg && component === 'unet') {
      const prefix = ORIGINAL_PREFIX.unet;
      for (const e of keyMapFor('unet', cfg)) {
        if (!e.diffusers.endsWith('.weight')) continue;
        const t = targets.get(`unet:${e.diffusers.slice(0, -'.weight'.length)}`);
        if (!t) continue;
        const orig = e.original.slice(prefix.length, -'.weight'.length);
        const flat = FLAT_PREFIX.unet + orig.replace(/\./g, '_');
        if (!byFlatName.has(flat)) byFlatName.set(flat, t);
      }
    }
  }
  return { targets, byFlatName, byDottedName };
}
