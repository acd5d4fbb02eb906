// torch.nn.functional.interpolate(x, size=(outH, outW), mode, align_corners=False,
// antialias) for float32 NCHW tensors, the four modes A1111's latent upscalers use
// (shared.latent_upscale_modes). Written from PyTorch's documented index rules
// (aten/src/ATen/native/UpSample.h):
//   scale = in / out (size given, no scale_factor)
//   nearest:        src = min(floor(dst * scale), in - 1), scale in float32
//   nearest-exact:  src = min(floor((dst + 0.5) * scale), in - 1) (computed as round(max((dst + .5) * scale - .5, 0)))
//   bilinear:       src = max((dst + 0.5) * scale - 0.5, 0), neighbours floor(src) and +1
//                   (clamped), weights 1 - frac and frac
//   bicubic:        src = (dst + 0.5) * scale - 0.5 (not clamped), Keys cubic with A = -0.75
//                   over the 4 neighbours, indices clamped to the border
//   antialias:      the Pillow-style separable filter (width first, then height): around
//                   center = scale * (dst + 0.5), support = r * max(scale, 1) (r = 1 bilinear,
//                   2 bicubic), taps j in [int(center - support + 0.5), int(center + support + 0.5))
//                   within the image, weight f((j - center + 0.5) / max(scale, 1)) normalised to
//                   sum 1; f = triangle for bilinear, Keys cubic with a = -0.5 for bicubic.
import { RedlineError } from '../errors.ts';

export type InterpolationMode = 'nearest' | 'nearest-exact' | 'bilinear' | 'bicubic';

export interface Nchw {
  n: number;
  c: number;
  h: number;
  w: number;
}

const f32 = Math.fround;

/** torch's nearest / nearest-exact source index along one axis, in float32 as its CPU kernel computes it. */
function nearestIndex(dst: number, inSize: number, outSize: number, exact: boolean): number {
  const scale = f32(inSize / outSize);
  // nearest-exact rounds the centre-aligned source, max(scale * (dst + .5) - .5, 0), to nearest.
  const src = exact ? Math.floor(f32(Math.max(f32(f32(scale * (dst + 0.5)) - 0.5), 0) + 0.5)) : Math.floor(f32(scale * dst));
  return Math.min(src, inSize - 1);
}

/** Keys' cubic convolution kernel, |x| < 2. */
function cubicWeight(x: number, a: number): number {
  const t = Math.abs(x);
  if (t <= 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a;
  return 0;
}

/** Taps of one output position along one axis: input indices and their weights. */
interface Taps {
  index: Int32Array;
  weight: Float64Array;
  /** Taps per output position. */
  size: number;
}

function linearTaps(inSize: number, outSize: number): Taps {
  const scale = inSize / outSize;
  const index = new Int32Array(outSize * 2);
  const weight = new Float64Array(outSize * 2);
  for (let o = 0; o < outSize; o++) {
    const src = Math.max((o + 0.5) * scale - 0.5, 0);
    const i0 = Math.floor(src);
    const i1 = i0 < inSize - 1 ? i0 + 1 : i0;
    const l1 = src - i0;
    index[2 * o] = i0;
    index[2 * o + 1] = i1;
    weight[2 * o] = 1 - l1;
    weight[2 * o + 1] = l1;
  }
  return { index, weight, size: 2 };
}

function cubicTaps(inSize: number, outSize: number): Taps {
  const scale = inSize / outSize;
  const index = new Int32Array(outSize * 4);
  const weight = new Float64Array(outSize * 4);
  const A = -0.75;
  for (let o = 0; o < outSize; o++) {
    const src = (o + 0.5) * scale - 0.5;
    const i = Math.floor(src);
    const t = src - i;
    const ws = [cubicWeight(t + 1, A), cubicWeight(t, A), cubicWeight(1 - t, A), cubicWeight(2 - t, A)];
    for (let k = 0; k < 4; k++) {
      index[4 * o + k] = Math.min(Math.max(i - 1 + k, 0), inSize - 1);
      weight[4 * o + k] = ws[k]!;
    }
  }
  return { index, weight, size: 4 };
}

function antialiasTaps(inSize: number, outSize: number, mode: 'bilinear' | 'bicubic'): Taps {
  const scale = inSize / outSize;
  const radius = mode === 'bilinear' ? 1 : 2;
  const filter = mode === 'bilinear' ? (x: number) => Math.max(0, 1 - Math.abs(x)) : (x: number) => cubicWeight(x, -0.5);
  const support = scale >= 1 ? radius * scale : radius;
  const invScale = scale >= 1 ? 1 / scale : 1;
  const size = Math.ceil(support) * 2 + 1;
  const index = new Int32Array(outSize * size);
  const weight = new Float64Array(outSize * size);
  for (let o = 0; o < outSize; o++) {
    const center = scale * (o + 0.5);
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const hi = Math.min(Math.trunc(center + support + 0.5), inSize);
    let total = 0;
    const ws: number[] = [];
    for (let j = lo; j < hi; j++) {
      const wgt = filter((j - center + 0.5) * invScale);
      ws.push(wgt);
      total += wgt;
    }
    for (let k = 0; k < size; k++) {
      const j = lo + k;
      index[o * size + k] = Math.min(j, inSize - 1);
      weight[o * size + k] = k < ws.length && total !== 0 ? ws[k]! / total : 0;
    }
  }
  return { index, weight, size };
}

function taps(inSize: number, outSize: number, mode: 'bilinear' | 'bicubic', antialias: boolean): Taps {
  if (antialias) return antialiasTaps(inSize, outSize, mode);
  return mode === 'bilinear' ? linearTaps(inSize, outSize) : cubicTaps(inSize, outSize);
}

/**
 * Resizes every [h, w] plane of an NCHW float tensor to [outH, outW] as
 * torch.nn.functional.interpolate(x, size=(outH, outW), mode=mode, align_corners=False,
 * antialias=antialias) does. `antialias` applies to bilinear and bicubic only, as in torch.
 */
export function interpolate(x: Float32Array, shape: Nchw, outH: number, outW: number, mode: InterpolationMode, antialias = false): Float32Array {
  const { n, c, h, w } = shape;
  if (x.length !== n * c * h * w) throw new Error(`interpolate: ${x.length} values for shape [${n}, ${c}, ${h}, ${w}]`);
  for (const [name, v] of [['height', outH], ['width', outW]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new RedlineError('bad_option', `interpolate: output ${name} must be a whole number >= 1, got ${v}.`);
  }
  if (antialias && (mode === 'nearest' || mode === 'nearest-exact')) {
    throw new RedlineError('bad_option', `interpolate: antialias applies to bilinear and bicubic, not ${mode}.`);
  }
  const planes = n * c;
  const out = new Float32Array(planes * outH * outW);
  if (mode === 'nearest' || mode === 'nearest-exact') {
    const exact = mode === 'nearest-exact';
    const ys = Int32Array.from({ length: outH }, (_, o) => nearestIndex(o, h, outH, exact));
    const xs = Int32Array.from({ length: outW }, (_, o) => nearestIndex(o, w, outW, exact));
    for (let p = 0; p < planes; p++) {
      const src = p * h * w;
      const dst = p * outH * outW;
      for (let oy = 0; oy < outH; oy++) {
        const row = src + ys[oy]! * w;
        for (let ox = 0; ox < outW; ox++) out[dst + oy * outW + ox] = x[row + xs[ox]!]!;
      }
    }
    return out;
  }
  const tx = taps(w, outW, mode, antialias);
  const ty = taps(h, outH, mode, antialias);
  // Separable: along the width first (into [h, outW]), then along the height, in float64.
  const rows = new Float64Array(h * outW);
  for (let p = 0; p < planes; p++) {
    const src = p * h * w;
    for (let iy = 0; iy < h; iy++) {
      for (let ox = 0; ox < outW; ox++) {
        let acc = 0;
        for (let k = 0; k < tx.size; k++) acc += tx.weight[ox * tx.size + k]! * x[src + iy * w + tx.index[ox * tx.size + k]!]!;
        rows[iy * outW + ox] = acc;
      }
    }
    const dst = p * outH * outW;
    for (let oy = 0; oy < outH; oy++) {
      for (let ox = 0; ox < outW; ox++) {
        let acc = 0;
        for (let k = 0; k < ty.size; k++) acc += ty.weight[oy * ty.size + k]! * rows[ty.index[oy * ty.size + k]! * outW + ox]!;
        out[dst + oy * outW + ox] = acc;
      }
    }
  }
  return out;
}
