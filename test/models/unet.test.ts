import { describe, expect, it } from 'vitest';
import { RedlineError } from '../../src/errors.ts';
import { openCheckpoint } from '../../src/models/checkpoint/load.ts';
import { TensorMapSource } from '../../src/models/checkpoint/weight-source.ts';
import { UnetSession } from '../../src/models/sessions.ts';
import { buildTextEncoder } from '../../src/models/text-encoder.ts';
import { buildUnet } from '../../src/models/unet.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import { goldenPath } from '../helpers/golden.ts';

const ckpt = openCheckpoint(goldenPath('models', 'diffusers'));
const cfg = ckpt.configs.unet;

describe('buildUnet', () => {
  it('keeps batch and spatial size symbolic', () => {
    const g = buildUnet(cfg, ckpt.components.unet);
    expect(g.inputs.map((v) => v.shape)).toEqual([
      ['batch', cfg.in_channels, 'height', 'width'],
      ['batch'],
      ['batch', 'sequence', cfg.cross_attention_dim],
    ]);
    expect(g.outputs[0]!.value.shape).toEqual(['batch', cfg.out_channels, 'height', 'width']);
    expect(g.parameterCount()).toBe(ckpt.components.unet.names().reduce((n, k) => n + ckpt.components.unet.shape(k).reduce((a, b) => a * b, 1), 0));
    expect(g.nodes.filter((n) => n.opType === 'MultiHeadAttention').length).toBe(2 * (3 * 2 + 3 * 3 + 1));
  });

  it('runs latent sizes that are not multiples of the down-sampling factor, as diffusers does', async () => {
    const session = await UnetSession.create(cfg, ckpt.components.unet);
    const out = await session.run(Tensor.zeros('f32', [1, 4, 7, 9]), 10, Tensor.zeros('f32', [1, 77, cfg.cross_attention_dim]));
    expect(out.shape).toEqual([1, 4, 7, 9]);
    expect((out.data as Float32Array).every(Number.isFinite)).toBe(true);
    await session.release();
  });

  it('refuses configs outside the SD 1.x family by name', () => {
    expect(() => buildUnet({ ...cfg, addition_embed_type: 'text_time' }, ckpt.components.unet)).toThrow(/class or addition embeddings/);
    expect(() => buildUnet({ ...cfg, down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'SimpleDownBlock'] }, ckpt.components.unet)).toThrow(
      /down block type SimpleDownBlock/,
    );
  });

  it('names a missing weight, a weight of the wrong shape, and weights the model does not use', () => {
    const names = ckpt.components.unet.names();
    const without = new Map(names.filter((n) => n !== 'conv_in.bias').map((n) => [n, ckpt.components.unet.get(n)]));
    const err = (() => {
      try {
        buildUnet(cfg, new TensorMapSource(without));
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(RedlineError);
    expect((err as Error).message).toMatch(/no weight named "conv_in.bias"/);
    const extra = new Map(names.map((n) => [n, ckpt.components.unet.get(n)]));
    extra.set('add_embedding.linear_1.weight', Tensor.zeros('f32', [2, 2]));
    expect(() => buildUnet(cfg, new TensorMapSource(extra))).toThrow(/1 tensors the model does not use \(first: add_embedding/);
    const wrong = new Map(names.map((n) => [n, n === 'conv_in.weight' ? Tensor.zeros('f32', [16, 5, 3, 3]) : ckpt.components.unet.get(n)]));
    expect(() => buildUnet(cfg, new TensorMapSource(wrong))).toThrow(/Conv: input .* has 4 channels, weight .* expects 5/);
  });
});

describe('buildTextEncoder', () => {
  it('exposes clip skip outputs up to the layer count', () => {
    const g = buildTextEncoder(ckpt.configs.text_encoder, ckpt.components.text_encoder);
    const names = g.outputs.map((o) => o.name);
    expect(names).toEqual(['last_hidden_state', 'pooled_output', ...Array.from({ length: ckpt.configs.text_encoder.num_hidden_layers - 1 }, (_, i) => `clip_skip_${i + 2}`)]);
  });
  it('uses exact MatMul/Softmax attention by default and the contrib op on request', () => {
    const ops = (g: ReturnType<typeof buildTextEncoder>): string[] => g.nodes.map((n) => n.opType);
    expect(ops(buildTextEncoder(ckpt.configs.text_encoder, ckpt.components.text_encoder))).not.toContain('MultiHeadAttention');
    expect(ops(buildTextEncoder(ckpt.configs.text_encoder, ckpt.components.text_encoder, { attention: 'mha' })).filter((o) => o === 'MultiHeadAttention').length).toBe(
      ckpt.configs.text_encoder.num_hidden_layers,
    );
  });
});
