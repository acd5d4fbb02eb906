// Random full-size weights for the benchmarks (no download): a fast seeded generator and
// fp16 tensors with torch-default-like scales (uniform ±1/sqrt(fan_in); norm weights 1,
// biases small), so activations stay finite through every block.
import { f32ToF16Bits } from '../src/tensor/half.ts';
import { Tensor } from '../src/tensor/tensor.ts';

export function xorshift(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/** One fp16 tensor per key-map entry, drawn in order from one seeded stream. */
export function randomF16Weights(entries: Iterable<{ diffusers: string; shape: number[] }>, seed: number): Map<string, Tensor> {
  const rand = xorshift(seed);
  const tensors = new Map<string, Tensor>();
  for (const e of entries) {
    const n = e.shape.reduce((a, b) => a * b, 1);
    const bits = new Uint16Array(n);
    const isNorm = /norm/.test(e.diffusers) && e.shape.length === 1;
    if (isNorm && e.diffusers.endsWith('.weight')) bits.fill(f32ToF16Bits(1));
    else {
      const fanIn = e.shape.length > 1 ? n / e.shape[0]! : 1;
      const a = e.shape.length > 1 ? 1 / Math.sqrt(fanIn) : 0.02;
      const table = new Uint16Array(4096);
      for (let i = 0; i < table.length; i++) table[i] = f32ToF16Bits(((rand() / 2 ** 32) * 2 - 1) * a);
      for (let i = 0; i < n; i++) bits[i] = table[rand() & 4095]!;
    }
    tensors.set(e.diffusers, new Tensor('f16', e.shape, bits));
  }
  return tensors;
}
