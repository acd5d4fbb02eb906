// Weight deltas of the adapter kinds A1111 applies to SD 1.x, written from their published
// definitions (kohya networks/lora.py, LyCORIS loha/lokr/locon). All math in float32
// storage with float64 accumulation.
import { RedlineError } from '../errors.ts';

export interface Mat {
  data: Float32Array;
  shape: number[];
}

export const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** Reshapes to 2-D [shape[0], rest], the matrix view kohya and A1111 use for conv factors. */
export function as2d(m: Mat): { rows: number; cols: number; data: Float32Array } {
  const rows = m.shape[0] ?? 1;
  return { rows, cols: m.data.length / rows, data: m.data };
}

/**
 * a [n, k] @ b [k, m] -> [n, m], float64 accumulation. k is a LoRA rank (4-128), so each
 * output row is built as a sum of k rows of b; unrolling by 8 lets V8 keep eight
 * coefficients in registers (3x faster than the plain loop on a rank-32 fuse).
 */
export function matmul(a: Float32Array, n: number, k: number, b: Float32Array, m: number): Float32Array {
  const out = new Float32Array(n * m);
  const acc = new Float64Array(m);
  for (let i = 0; i < n; i++) {
    acc.fill(0);
    const ao = i * k;
    let p = 0;
    for (; p + 7 < k; p += 8) {
      const a0 = a[ao + p]!, a1 = a[ao + p + 1]!, a2 = a[ao + p + 2]!, a3 = a[ao + p + 3]!;
      const a4 = a[ao + p + 4]!, a5 = a[ao + p + 5]!, a6 = a[ao + p + 6]!, a7 = a[ao + p + 7]!;
      const b0 = p * m, b1 = b0 + m, b2 = b1 + m, b3 = b2 + m, b4 = b3 + m, b5 = b4 + m, b6 = b5 + m, b7 = b6 + m;
      for (let j = 0; j < m; j++) {
        acc[j]! += a0 * b[b0 + j]! + a1 * b[b1 + j]! + a2 * b[b2 + j]! + a3 * b[b3 + j]! + a4 * b[b4 + j]! + a5 * b[b5 + j]! + a6 * b[b6 + j]! + a7 * b[b7 + j]!;
      }
    }
    for (; p < k; p++) {
      const av = a[ao + p]!;
      const bo = p * m;
      for (let j = 0; j < m; j++) acc[j]! += av * b[bo + j]!;
    }
    out.set(acc, i * m);
  }
  return out;
}

/** up [out, r, (1, 1)] @ down [r, in, (kh, kw)] -> [out, in*kh*kw]. */
export function upDown(up: Mat, down: Mat, label: string): { data: Float32Array; rows: number; cols: number } {
  const u = as2d(up);
  const d = as2d(down);
  if (u.cols !== d.rows) {
    throw new RedlineError('adapter_shape_mismatch', `${label}: up factor [${up.shape.join(', ')}] and down factor [${down.shape.join(', ')}] have different ranks.`, 'The adapter file is corrupt.');
  }
  return { data: matmul(u.data, u.rows, u.cols, d.data, d.cols), rows: u.rows, cols: d.cols };
}

/**
 * Tucker / CP rebuild used by LoCon's lora_mid and LoHa's hada_t1/t2 and LoKr's lokr_t2:
 * W[p, q, k, l] = sum_{i,j} t[i, j, k, l] * wa[i, p] * wb[j, q], with wa [r, out], wb [r, in]
 * (A1111 lyco_helpers.make_weight_cp).
 */
export function rebuildTucker(t: Mat, wa: Mat, wb: Mat): Mat {
  const [r1, r2, kh = 1, kw = 1] = t.shape as [number, number, number?, number?];
  const a = as2d(wa);
  const b = as2d(wb);
  if (a.rows !== r1 || b.rows !== r2) throw new RedlineError('adapter_shape_mismatch', `tucker core [${t.shape.join(', ')}] does not fit factors [${wa.shape.join(', ')}] and [${wb.shape.join(', ')}].`);
  const out = a.cols;
  const inp = b.cols;
  const kk = kh * kw;
  // tmp[i, q, s] = sum_j t[i, j, s] * wb[j, q]
  const tmp = new Float64Array(r1 * inp * kk);
  for (let i = 0; i < r1; i++) {
    for (let j = 0; j < r2; j++) {
      for (let q = 0; q < inp; q++) {
        const w = b.data[j * inp + q]!;
        if (w === 0) continue;
        for (let s = 0; s < kk; s++) tmp[(i * inp + q) * kk + s]! += t.data[(i * r2 + j) * kk + s]! * w;
      }
    }
  }
  const res = new Float64Array(out * inp * kk);
  for (let i = 0; i < r1; i++) {
    for (let p = 0; p < out; p++) {
      const w = a.data[i * out + p]!;
      if (w === 0) continue;
      for (let x = 0; x < inp * kk; x++) res[p * inp * kk + x]! += tmp[i * inp * kk + x]! * w;
    }
  }
  return { data: Float32Array.from(res), shape: [out, inp, kh, kw] };
}

/**
 * LoCon with a mid (CP) factor: W[o, i, k, l] = sum_{n,m} mid[n, m, k, l] up[o, n] down[m, i]
 * (A1111 rebuild_cp_decomposition), up [out, r], down [r, in].
 */
export function rebuildMid(up: Mat, down: Mat, mid: Mat): Mat {
  const u = as2d(up);
  const upT: Mat = { data: transpose(u.data, u.rows, u.cols), shape: [u.cols, u.rows] };
  return rebuildTucker(mid, upT, { data: as2d(down).data, shape: [down.shape[0]!, as2d(down).cols] });
}

export function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = a[i * cols + j]!;
  return out;
}

/**
 * Kronecker product of w1 [a, b] and w2 [p, q, (kh, kw)] -> [a*p, b*q, (kh, kw)]
 * (torch.kron with w1 unsqueezed to [a, b, 1, 1] when w2 is a conv kernel).
 */
export function kron(w1: Mat, w2: Mat): Mat {
  if (w1.shape.length !== 2) throw new RedlineError('adapter_shape_mismatch', `LoKr w1 must be 2-D, got [${w1.shape.join(', ')}].`);
  const [a, b] = w1.shape as [number, number];
  const [p, q, kh = 1, kw = 1] = w2.shape as [number, number, number?, number?];
  const kk = kh * kw;
  const rows = a * p;
  const cols = b * q;
  const out = new Float32Array(rows * cols * kk);
  for (let i = 0; i < a; i++) {
    for (let j = 0; j < b; j++) {
      const s = w1.data[i * b + j]!;
      for (let k = 0; k < p; k++) {
        for (let l = 0; l < q; l++) {
          const dst = ((i * p + k) * cols + (j * q + l)) * kk;
          const src = (k * q + l) * kk;
          for (let x = 0; x < kk; x++) out[dst + x] = s * w2.data[src + x]!;
        }
      }
    }
  }
  return { data: out, shape: w2.shape.length === 4 ? [rows, cols, kh, kw] : [rows, cols] };
}
