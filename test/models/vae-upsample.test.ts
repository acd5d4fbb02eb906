import { describe, expect, it } from 'vitest';
import { Graph, GraphBuildError } from '../../src/graph/graph.ts';
import { exportOnnx } from '../../src/graph/onnx.ts';
import * as op from '../../src/graph/ops.ts';
import { openCheckpoint } from '../../src/models/checkpoint/load.ts';
import { buildVaeDecoder, upsampleConv3x3 } from '../../src/models/vae.ts';
import { Session } from '../../src/runtime/session.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import { goldenPath } from '../helpers/golden.ts';

function seeded(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

/** Runs `build`'s graph (input x [1, ci, h, w], weights w [co, ci, 3, 3] and b [co] baked in). */
async function run(build: (x: ReturnType<Graph['input']>, w: ReturnType<Graph['input']>, b: ReturnType<Graph['input']>) => ReturnType<Graph['input']>, ci: number, co: number, h: number, w: number): Promise<Float32Array> {
  const g = new Graph('upsample_conv');
  const x = g.input('x', 'f32', [1, ci, 'height', 'width']);
  const weight = g.constant(seeded(co * ci * 9, 2), 'f32', [co, ci, 3, 3], 'w');
  const bias = g.constant(seeded(co, 3), 'f32', [co], 'b');
  g.output('y', build(x, weight, bias));
  const session = await Session.create(exportOnnx(g));
  try {
    const out = await session.run({ x: new Tensor('f32', [1, ci, h, w], seeded(ci * h * w, 1)) });
    expect(out.y!.shape).toEqual([1, co, 2 * h, 2 * w]);
    return out.y!.data as Float32Array;
  } finally {
    await session.release();
  }
}

describe('upsampleConv3x3 (the VAE decoder upsampler at input resolution)', () => {
  it.each([
    [16, 32, 5, 7],
    [3, 16, 1, 1],
    [24, 8, 6, 2],
  ])('equals 2x nearest upsampling then a padded 3x3 conv (ci %i, co %i, %ix%i)', async (ci, co, h, w) => {
    const reference = await run((x, wt, b) => op.conv(op.upsampleNearest(x, 2), wt, b, { pads: [1, 1, 1, 1] }), ci, co, h, w);
    const fused = await run((x, wt, b) => upsampleConv3x3(x, wt, b), ci, co, h, w);
    let maxRef = 0;
    let maxDiff = 0;
    for (let i = 0; i < reference.length; i++) {
      maxRef = Math.max(maxRef, Math.abs(reference[i]!));
      maxDiff = Math.max(maxDiff, Math.abs(reference[i]! - fused[i]!));
    }
    expect(maxRef).toBeGreaterThan(0.5);
    // float32 rounding of the summed taps and of a different accumulation order
    expect(maxDiff).toBeLessThan(maxRef * 2e-6);
  });

  it('refuses a kernel that is not 3x3', () => {
    const g = new Graph('bad');
    const x = g.input('x', 'f32', [1, 4, 8, 8]);
    expect(() => upsampleConv3x3(x, g.constant(new Float32Array(4 * 4), 'f32', [4, 4, 1, 1]), g.constant(new Float32Array(4), 'f32', [4]))).toThrow(GraphBuildError);
  });

  it('is what the decoder uses: no upsampled tensor is materialised', () => {
    const ckpt = openCheckpoint(goldenPath('models', 'diffusers'));
    const g = buildVaeDecoder(ckpt.configs.vae, ckpt.components.vae);
    const levels = ckpt.configs.vae.block_out_channels.length;
    expect(g.nodes.filter((n) => n.opType === 'Resize')).toHaveLength(0);
    expect(g.nodes.filter((n) => n.opType === 'DepthToSpace')).toHaveLength(levels - 1);
    expect(g.outputs[0]!.value.shape.slice(0, 2)).toEqual(['batch', ckpt.configs.vae.out_channels]);
  });
});
