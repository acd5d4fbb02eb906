import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openCheckpoint } from '../../src/models/checkpoint/load.ts';
import { TextEncoderSession } from '../../src/models/sessions.ts';
import { probeProvider, type Provider } from '../../src/runtime/session.ts';
import { SafetensorsFile } from '../../src/tensor/safetensors.ts';
import { goldenJson, goldenPath } from '../helpers/golden.ts';

const ATOL = 1e-4; // golden README: components atol 1e-4

interface TextEncoderCases {
  prompts: string[];
  input_ids: number[][];
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

// CPU always; WebGPU where it can start (the suite names the reason when it skips it).
const webgpuUnavailable = await probeProvider('webgpu');
const runs: [string, Provider][] = [
  ['diffusers', 'cpu'],
  ['sd15_tiny_original.safetensors', 'cpu'],
  ['diffusers', 'webgpu'],
];

describe.each(runs)('CLIP text encoder from %s on %s matches transformers', (source, provider) => {
  if (provider === 'webgpu' && webgpuUnavailable) {
    it.skip(`webgpu skipped: the provider cannot start here (${webgpuUnavailable.split('\n')[0]!.slice(0, 160)})`, () => {});
    return;
  }
  const cases = goldenJson<TextEncoderCases>('components', 'text_encoder.json');
  const golden = SafetensorsFile.open(goldenPath('components', 'text_encoder.safetensors'));
  const hidden = cases.input_ids.length > 0 ? golden.info('last_hidden_state').shape[2]! : 0;
  let session: TextEncoderSession;

  beforeAll(async () => {
    const ckpt = openCheckpoint(goldenPath('models', source), { configs: goldenPath('models', 'diffusers') });
    session = await TextEncoderSession.create(ckpt.configs.text_encoder, ckpt.components.text_encoder, { provider });
  });
  afterAll(() => session.release());

  it('has a case per prompt', () => {
    expect(cases.prompts.length).toBe(cases.input_ids.length);
    expect(golden.info('last_hidden_state').shape[0]).toBe(cases.prompts.length);
  });

  for (const [name, clipSkip] of [['last_hidden_state', 1], ['clip_skip2', 2]] as const) {
    it(`${name} (clip skip ${clipSkip}) for every prompt, atol ${ATOL}`, async () => {
      const expected = golden.getFloat32(name);
      const out = await session.run(cases.input_ids, { clipSkip });
      expect(out.hidden.shape).toEqual([cases.input_ids.length, 77, hidden]);
      const per = 77 * hidden;
      cases.prompts.forEach((prompt, i) => {
        const d = maxAbsDiff((out.hidden.data as Float32Array).subarray(i * per, (i + 1) * per), expected.subarray(i * per, (i + 1) * per));
        expect(d, `prompt ${i} ${JSON.stringify(prompt)}`).toBeLessThan(ATOL);
      });
    });
  }

  it('pooled output (state at the first EOS)', async () => {
    const out = await session.run(cases.input_ids);
    expect(maxAbsDiff(out.pooled.data as Float32Array, golden.getFloat32('pooler_output'))).toBeLessThan(ATOL);
  });

  it('clip skip N is final_layer_norm(hidden_states[-N]) for every N the model has', async () => {
    // expected: the golden pre-norm hidden states through a LayerNorm written out here
    const all = golden.getFloat32('all_hidden_states');
    const layers = golden.info('all_hidden_states').shape[0]!;
    expect(layers).toBe(session.config.num_hidden_layers + 1);
    const ckpt = openCheckpoint(goldenPath('models', source), { configs: goldenPath('models', 'diffusers') });
    const gamma = ckpt.components.text_encoder.get('text_model.final_layer_norm.weight').toFloat32();
    const beta = ckpt.components.text_encoder.get('text_model.final_layer_norm.bias').toFloat32();
    const eps = session.config.layer_norm_eps;
    const rows = cases.input_ids.length * 77;
    for (let skip = 2; skip <= session.config.num_hidden_layers; skip++) {
      const src = all.subarray((layers - skip) * rows * hidden, (layers - skip + 1) * rows * hidden);
      const expected = new Float32Array(src.length);
      for (let r = 0; r < rows; r++) {
        const x = src.subarray(r * hidden, (r + 1) * hidden);
        const mean = x.reduce((a, v) => a + v, 0) / hidden;
        const variance = x.reduce((a, v) => a + (v - mean) ** 2, 0) / hidden;
        for (let i = 0; i < hidden; i++) expected[r * hidden + i] = ((x[i]! - mean) / Math.sqrt(variance + eps)) * gamma[i]! + beta[i]!;
      }
      const out = await session.run(cases.input_ids, { clipSkip: skip });
      expect(maxAbsDiff(out.hidden.data as Float32Array, expected), `clip skip ${skip}`).toBeLessThan(ATOL);
    }
  });

  it('refuses a clip skip beyond the layer count and rows of the wrong length', async () => {
    await expect(session.run(cases.input_ids, { clipSkip: session.config.num_hidden_layers + 1 })).rejects.toThrow(/clip skip .* out of range/);
    await expect(session.run([[49406, 49407]])).rejects.toThrow(/exactly 77/);
  });
});
