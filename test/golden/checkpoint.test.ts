// The diffusers folder and the original single-file checkpoint of the golden set must give
// the same tensor for every diffusers key, and exactly the keys/shapes the set lists.
import { afterAll, describe, expect, it } from 'vitest';
import { openCheckpoint, type Checkpoint } from '../../src/models/checkpoint/index.ts';
import { SafetensorsFile } from '../../src/tensor/safetensors.ts';
import { RedlineError } from '../../src/errors.ts';
import { goldenJson, goldenPath } from '../helpers/golden.ts';

type KeyList = Record<string, Record<string, number[]>>;
const keysDiffusers = goldenJson<KeyList>('models', 'keys_diffusers.json');
const keysOriginal = goldenJson<Record<string, number[]>>('models', 'keys_original.json');
const folder = goldenPath('models', 'diffusers');
const single = goldenPath('models', 'sd15_tiny_original.safetensors');

const opened: Checkpoint[] = [];
afterAll(() => opened.forEach((c) => c.close()));

describe('golden checkpoint loading', () => {
  const fromFolder = openCheckpoint(folder);
  const fromSingle = openCheckpoint(single, { configs: folder });
  opened.push(fromFolder, fromSingle);

  for (const component of Object.keys(keysDiffusers)) {
    it(`${component}: both layouts list exactly the golden diffusers keys and shapes`, () => {
      const expected = keysDiffusers[component]!;
      for (const ckpt of [fromFolder, fromSingle]) {
        const src = ckpt.components[component as 'unet'];
        expect(new Set(src.names())).toEqual(new Set(Object.keys(expected)));
        for (const [name, shape] of Object.entries(expected)) expect(src.shape(name), name).toEqual(shape);
      }
    });

    it(`${component}: every tensor is identical from the folder and from the single file`, () => {
      const a = fromFolder.components[component as 'unet'];
      const b = fromSingle.components[component as 'unet'];
      let compared = 0;
      for (const name of Object.keys(keysDiffusers[component]!)) {
        const ta = a.get(name);
        const tb = b.get(name);
        expect(tb.shape, name).toEqual(ta.shape);
        expect(tb.dtype).toBe(ta.dtype);
        expect(Buffer.from(tb.bytes()).equals(Buffer.from(ta.bytes())), name).toBe(true);
        compared++;
      }
      expect(compared).toBe(Object.keys(keysDiffusers[component]!).length);
    });
  }

  it('the single file uses every key the golden set lists for it', () => {
    const file = SafetensorsFile.open(single);
    try {
      expect(new Set(file.keys())).toEqual(new Set(Object.keys(keysOriginal)));
    } finally {
      file.close();
    }
    expect(fromSingle.ignoredKeys).toEqual([]);
    const used = new Set<string>();
    for (const c of ['unet', 'vae', 'text_encoder'] as const) {
      for (const n of fromSingle.components[c].names()) used.add(fromSingle.components[c].stored(n).key);
    }
    expect(used).toEqual(new Set(Object.keys(keysOriginal)));
  });

  it('the folder configs are passed through for the engine', () => {
    const cfg = goldenJson<Record<string, Record<string, unknown>>>('models', 'model_configs.json');
    expect(fromFolder.configs.unet.block_out_channels).toEqual(cfg.unet!.block_out_channels);
    expect(fromFolder.configs.vae.norm_num_groups).toEqual(cfg.vae!.norm_num_groups);
    expect(fromFolder.configs.text_encoder.num_attention_heads).toEqual(cfg.text_encoder!.num_attention_heads);
    expect(fromFolder.tokenizerDir).not.toBeNull();
    expect(fromSingle.tokenizerDir).toBeNull();
  });

  it('without configs the single file is refused, since its group counts are not in the weights', () => {
    let err: unknown;
    try {
      openCheckpoint(single).close();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RedlineError);
    expect((err as RedlineError).code).toBe('config_mismatch');
    expect((err as RedlineError).message).toMatch(/norm_num_groups 32.*--config/);
  });
});
