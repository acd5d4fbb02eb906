// From-scratch initial weights for an SD 1.5-family model of any size: every parameter the
// component's config implies (names and shapes from the checkpoint key map), drawn from a
// seeded generator so the same recipe gives the same starting point on every machine.
// Linear/conv weights follow PyTorch's default (uniform, bound 1/sqrt(fan_in)); norms start
// at identity; CLIP embeddings at N(0, 0.02) as transformers' CLIPTextModel; and, as in
// the original LDM code, the UNet's residual output convs, attention output projections
// and final conv start at zero so every block begins as the identity.
import type { Component } from '../../models/checkpoint/sd15-keymap.ts';
import { keyMapFor } from '../../models/checkpoint/sd15-keymap.ts';
import type { SD15Configs } from '../../models/checkpoint/configs.ts';
import { SeededRandom } from '../procedural/random.ts';

const ZERO_INIT_UNET = [/resnets\.\d+\.conv2\.weight$/, /attentions\.\d+\.proj_out\.weight$/, /^conv_out\.weight$/];

export function initComponent(component: Component, configs: SD15Configs, seed: number): Map<string, Float32Array> {
  const rng = new SeededRandom(seed);
  const gauss = (): number => {
    const u = Math.max(rng.next(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
  };
  const out = new Map<string, Float32Array>();
  for (const e of keyMapFor(component, configs[component])) {
    const n = e.shape.reduce((a, b) => a * b, 1);
    const a = new Float32Array(n);
    const name = e.diffusers;
    if (e.shape.length === 1) {
      if (name.endsWith('.weight')) a.fill(1); // norm scales; biases stay 0
    } else if (/(token|position)_embedding\.weight$/.test(name)) {
      for (let i = 0; i < n; i++) a[i] = 0.02 * gauss();
    } else if (!(component === 'unet' && ZERO_INIT_UNET.some((r) => r.test(name)))) {
      const fanIn = n / e.shape[0]!;
      const bound = 1 / Math.sqrt(fanIn);
      for (let i = 0; i < n; i++) a[i] = (2 * rng.next() - 1) * bound;
    }
    out.set(name, a);
  }
  return out;
}
