import { describe, expect, it } from 'vitest';
import { RedlineError } from '../../src/errors.ts';
import { Graph } from '../../src/graph/graph.ts';
import * as op from '../../src/graph/ops.ts';
import { exportOnnx } from '../../src/graph/onnx.ts';
import { Session, type Provider } from '../../src/runtime/session.ts';
import { Tensor } from '../../src/tensor/tensor.ts';

function tripleModel(): Uint8Array {
  const g = new Graph('triple');
  const x = g.input('x', 'f32', ['n']);
  g.output('y', op.mul(x, 3));
  g.output('ids', op.cast(op.mul(x, 2), 'i64'));
  return exportOnnx(g);
}

// The GPU providers cannot start on a machine without a GPU; where they can, these checks
// do not apply and are reported as skipped by name.
async function providerStarts(p: Provider): Promise<boolean> {
  try {
    await (await Session.create(tripleModel(), { provider: p })).release();
    return true;
  } catch {
    return false;
  }
}

describe('Session', () => {
  it('runs on the cpu with repo Tensors in and out', async () => {
    const s = await Session.create(tripleModel());
    expect(s.provider).toBe('cpu');
    const out = await s.run({ x: Tensor.f32([1, -2.5]) });
    expect(out.y!.dtype).toBe('f32');
    expect([...(out.y!.data as Float32Array)]).toEqual([3, -7.5]);
    expect(out.ids!.dtype).toBe('i64');
    expect([...(out.ids!.data as BigInt64Array)]).toEqual([2n, -5n]);
    await s.release();
  });

  it('writes into preallocated outputs', async () => {
    const s = await Session.create(tripleModel());
    const y = Tensor.zeros('f32', [2]);
    const out = await s.run({ x: Tensor.f32([4, 5]) }, { y });
    expect(out.y).toBe(y);
    expect([...(y.data as Float32Array)]).toEqual([12, 15]);
    await s.run({ x: Tensor.f32([1, 1]) }, { y });
    expect([...(y.data as Float32Array)]).toEqual([3, 3]);
    await s.release();
  });

  it('rejects an unknown provider by name', async () => {
    await expect(Session.create(tripleModel(), { provider: 'metal' as Provider })).rejects.toThrow(/Unknown execution provider "metal".*cpu, webgpu, cuda/);
  });

  for (const p of ['webgpu', 'cuda'] as const) {
    it(`${p}: a provider that cannot start is a RedlineError, and falls back only when allowed`, async (ctx) => {
      if (await providerStarts(p)) ctx.skip(`${p} starts on this machine`);
      const err = await Session.create(tripleModel(), { provider: p }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RedlineError);
      expect((err as RedlineError).code).toBe('provider_unavailable');
      expect((err as Error).message).toMatch(new RegExp(`The ${p} execution provider could not start`));
      const s = await Session.create(tripleModel(), { provider: p, allowFallback: true });
      expect(s.provider).toBe('cpu');
      expect(s.fallbackReason).toMatch(new RegExp(`^${p} could not start`));
      expect([...((await s.run({ x: Tensor.f32([1]) })).y!.data as Float32Array)]).toEqual([3]);
      await s.release();
    });
  }
});
