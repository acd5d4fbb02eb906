// The fuse of low-rank modules, W' = W + coef * up @ down, run by ONNX Runtime: its GEMM
// and casts are ~20x faster than the JS loops (a rank-32 fuse into full-size SD 1.5 is
// ~11 G multiply-adds plus 350 M fp16 conversions). One small session per base dtype,
// with symbolic dims, serves every module shape. LoHa/LoKr/CP modules and bf16 weights
// (no ORT CPU bf16 inputs) take the JS path of fuse.ts; both compute the same formula.
import { Graph } from '../graph/graph.ts';
import * as op from '../graph/ops.ts';
import { compileGraph } from '../runtime/compile.ts';
import type { Session } from '../runtime/session.ts';
import type { WeightSource } from '../models/checkpoint/weight-source.ts';
import { Tensor } from '../tensor/tensor.ts';
import { as2d } from './delta.ts';
import { type AdapterStrength, checkStrengths, type FusedWeights, fuseOneWeight, type FuseOptions, planFuse } from './fuse.ts';
import type { AdaptedComponent } from './module-index.ts';

const sessions = new Map<string, Promise<Session>>();

function fuseSession(dtype: 'f32' | 'f16'): Promise<Session> {
  let s = sessions.get(dtype);
  if (!s) {
    const g = new Graph(`lora_fuse_${dtype}`);
    const w = g.input('weight', dtype, ['out', 'in']);
    const up = g.input('up', 'f32', ['out', 'rank']);
    const down = g.input('down', 'f32', ['rank', 'in']);
    const coef = g.input('coef', 'f32', []);
    const sum = op.add(dtype === 'f32' ? w : op.cast(w, 'f32'), op.mul(op.matmul(up, down), coef));
    g.output('fused', dtype === 'f32' ? sum : op.cast(sum, dtype));
    s = compileGraph(g, { provider: 'cpu' });
    sessions.set(dtype, s);
  }
  return s;
}

/** Same result as fuseAdapters (to float rounding), computed with ONNX Runtime. */
export async function fuseAdaptersFast(
  weights: Record<AdaptedComponent, WeightSource>,
  adapters: AdapterStrength[],
  opts: FuseOptions = {},
): Promise<FusedWeights> {
  checkStrengths(adapters);
  const work = planFuse(weights, adapters);
  const out: FusedWeights = { unet: new Map(), text_encoder: new Map() };
  let done = 0;
  for (const item of work.values()) {
    const src = weights[item.component];
    const base = src.get(item.weight);
    const shape = src.shape(item.weight);
    const lowRank = item.items.every(({ m }) => (m.kind === 'lora' || m.kind === 'locon') && !m.parts.lora_mid);
    const wantF32 = opts.dtype === 'f32';
    if (!lowRank || (base.dtype !== 'f32' && base.dtype !== 'f16')) {
      out[item.component].set(item.weight, fuseOneWeight(base, shape, item, opts));
    } else {
      const outRows = shape[0]!;
      const inFlat = base.numel / outRows;
      // Fusing into an f32 result starts from the widened base, not from an f16 rounding.
      const start = wantF32 ? base.to('f32') : base;
      const session = await fuseSession(start.dtype as 'f32' | 'f16');
      let w = start.reshape([outRows, inFlat]);
      for (const { coef, m } of item.items) {
        const up = as2d(m.parts.lora_up!);
        const down = as2d(m.parts.lora_down!);
        const res = await session.run({
          weight: w,
          up: new Tensor('f32', [up.rows, up.cols], up.data),
          down: new Tensor('f32', [down.rows, down.cols], down.data),
          coef: new Tensor('f32', [], Float32Array.of(coef)),
        });
        w = res.fused!;
      }
      out[item.component].set(item.weight, w.reshape(shape));
    }
    opts.onProgress?.(++done, work.size);
  }
  return out;
}
