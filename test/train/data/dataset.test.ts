import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedlineError } from '../../../src/errors.ts';
import { parseTrainConfig, type TrainConfig } from '../../../src/train/data/config.ts';
import { epochBatches, loadTrainingImage, scanDatasets } from '../../../src/train/data/dataset.ts';
import { TrainRng } from '../../../src/train/data/rng.ts';

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'redline-data-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A gradient image (procedural), `channels` 1..4. */
async function image(path: string, w: number, h: number, channels: 1 | 3 | 4 = 3): Promise<void> {
  const buf = Buffer.alloc(w * h * channels);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < channels; c++) buf[(y * w + x) * channels + c] = (x * 4 + y * 2 + c * 60) % 256;
  const img = sharp(buf, { raw: { width: w, height: h, channels } });
  await (channels === 1 ? img.toColourspace('b-w') : img).png().toFile(path);
}

async function folder(name: string, files: Array<{ n: string; w?: number; h?: number; caption?: string | null; channels?: 1 | 3 | 4 }>): Promise<string> {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true });
  for (const f of files) {
    await image(join(dir, `${f.n}.png`), f.w ?? 64, f.h ?? 64, f.channels ?? 3);
    if (f.caption !== null) writeFileSync(join(dir, `${f.n}.txt`), f.caption ?? `a picture of ${f.n}`);
  }
  return dir;
}

function config(toml: string): TrainConfig {
  return parseTrainConfig(`[training]\npretrained_model = "model"\noutput_dir = "out"\n${toml}`, join(root, 'train.toml'));
}

async function expectDatasetError(cfg: TrainConfig, ...patterns: RegExp[]): Promise<void> {
  const err = await scanDatasets(cfg.datasets, { root }).then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(RedlineError);
  for (const p of patterns) expect((err as Error).message).toMatch(p);
}

describe('training config', () => {
  it('reads kohya dataset and training keys, with [general] defaults and subset overrides', async () => {
    await folder('cfg_a', [{ n: 'a' }]);
    const c = config(`network_dim = 8\nnetwork_alpha = 4\nlr_scheduler = "cosine"\nmax_train_steps = 300\nmin_snr_gamma = 5\nsample_prompts = ["a red circle"]
optimizer_args = ["weight_decay=0.1", "betas=0.8,0.99"]\nxformers = true
[general]\nshuffle_caption = true\nkeep_tokens = 1\nresolution = 64\nbatch_size = 2
[[datasets]]\nenable_bucket = true\nmin_bucket_reso = 32\nmax_bucket_reso = 128\nbucket_reso_steps = 32
  [[datasets.subsets]]\n  image_dir = "cfg_a"\n  num_repeats = 3\n  keep_tokens = 2
  [[datasets.subsets]]\n  image_dir = "cfg_a"\n  is_reg = true\n`);
    expect(c.networkDim).toBe(8);
    expect(c.networkAlpha).toBe(4);
    expect(c.lrScheduler).toBe('cosine');
    expect(c.minSnrGamma).toBe(5);
    expect(c.weightDecay).toBe(0.1);
    expect(c.betas).toEqual([0.8, 0.99]);
    expect(c.ignoredKeys).toEqual(['xformers']);
    expect(c.pretrainedModel).toBe(join(root, 'model'));
    const d = c.datasets[0]!;
    expect(d).toMatchObject({ resolution: [64, 64], batchSize: 2, enableBucket: true, minBucketReso: 32, maxBucketReso: 128, bucketResoSteps: 32 });
    expect(d.subsets[0]).toMatchObject({ imageDir: join(root, 'cfg_a'), numRepeats: 3, keepTokens: 2, shuffleCaption: true, isReg: false, captionExtension: '.txt' });
    expect(d.subsets[1]).toMatchObject({ keepTokens: 1, isReg: true, numRepeats: 1 });
  });

  it('reads kohya training sections and N_name folders', async () => {
    const dir = join(root, 'kohya_tree');
    mkdirSync(dir, { recursive: true });
    await folder('kohya_tree/5_sks scene', [{ n: 'x' }]);
    const c = parseTrainConfig(
      `[model_arguments]\npretrained_model_name_or_path = "m"\n[training_arguments]\noutput_dir = "o"\ntrain_data_dir = "kohya_tree"\nresolution = "64,48"\n`,
      join(root, 'k.toml'),
    );
    expect(c.datasets[0]!.resolution).toEqual([64, 48]);
    expect(c.datasets[0]!.subsets[0]).toMatchObject({ numRepeats: 5, classTokens: 'sks scene' });
  });

  it('names unknown keys with a suggestion, and refuses kohya keys it does not implement', () => {
    expect(() => config('netwrok_dim = 4\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "x"')).toThrow(/unknown key "netwrok_dim".*Did you mean "network_dim"/);
    expect(() => config('flip_aug = true\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "x"')).toThrow(/"flip_aug" is not supported: flip augmentation/);
    expect(() => config('[[datasets]]\nbatch_sise = 2\n[[datasets.subsets]]\nimage_dir = "x"')).toThrow(/\[\[datasets\]\] #1: unknown key "batch_sise"/);
  });

  it('refuses bad values with the key and value', () => {
    const ds = '\n[[datasets]]\n[[datasets.subsets]]\nimage_dir = "x"';
    expect(() => config(`network_dim = 0${ds}`)).toThrow(/"network_dim" must be at least 1, got 0/);
    expect(() => config(`lr_scheduler = "exp"${ds}`)).toThrow(/lr_scheduler "exp" is not known/);
    expect(() => config(`[general]\nresolution = 60${ds}`)).toThrow(/resolution 60x60 is not a multiple of 8/);
    expect(() => config(`[general]\nenable_bucket = true\nbucket_reso_steps = 12${ds}`)).toThrow(/bucket_reso_steps 12 is not a multiple of 8/);
    expect(() => config(`seed = "x"${ds}`)).toThrow(/"seed" must be a number/);
    expect(() => config('')).toThrow(/no datasets/);
    expect(() => parseTrainConfig('[training\nx=1', join(root, 'bad.toml'))).toThrow(/bad\.toml: not valid TOML.*line 1/);
  });
});

describe('dataset scan', () => {
  it('reads captions, intensity tags, repeats and buckets', async () => {
    await folder('scan_ok', [
      { n: 'wide', w: 96, h: 64, caption: 'a wide one, intensity:3' },
      { n: 'wide2', w: 96, h: 64 },
      { n: 'square', w: 64, h: 64 },
      { n: 'square2', w: 80, h: 80 },
    ]);
    const c = config('[[datasets]]\nresolution = 64\nbatch_size = 2\nenable_bucket = true\nmin_bucket_reso = 32\nmax_bucket_reso = 128\nbucket_reso_steps = 32\n[[datasets.subsets]]\nimage_dir = "scan_ok"\nnum_repeats = 2');
    const items = await scanDatasets(c.datasets);
    const wide = items.find((i) => i.path.endsWith('wide.png'))!;
    // area 4096, step 32: buckets (32,128),(64,64),(128,32); 96x64 = 1.5 is nearest 64x64
    expect(wide).toMatchObject({ caption: 'a wide one', intensity: 3, bucket: [64, 64], resized: [96, 64], repeats: 2 });
    expect(items.find((i) => i.path.endsWith('square2.png'))).toMatchObject({ bucket: [64, 64], resized: [64, 64], intensity: null });
    const batches = epochBatches(c.datasets, items, new TrainRng(1));
    expect(batches).toHaveLength(4); // 4 images x 2 repeats / batch 2
    expect(batches.flatMap((b) => b.items).length).toBe(8);
    // same seed, same order; the order changes with the seed
    const names = (bs: typeof batches): string[] => bs.flatMap((b) => b.items.map((i) => i.path));
    expect(names(epochBatches(c.datasets, items, new TrainRng(1)))).toEqual(names(batches));
    const img = await loadTrainingImage(wide);
    expect([img.width, img.height, img.data.length]).toEqual([64, 64, 3 * 64 * 64]);
    // centre crop of the 96-wide image: column 0 of the crop is column 16 of the source
    // (pixel value (16*4 + 0) % 256 = 64 in channel 0 -> 64/255*2-1)
    expect(img.data[0]).toBeCloseTo((64 / 255) * 2 - 1, 5);
  });

  it('balances regularisation images to the training count as kohya does', async () => {
    await folder('reg_train', [{ n: 't0' }, { n: 't1' }, { n: 't2' }]);
    await folder('reg_reg', [{ n: 'r0' }, { n: 'r1' }, { n: 'r2' }, { n: 'r3' }]);
    const c = config('[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = "reg_train"\nnum_repeats = 2\n[[datasets.subsets]]\nimage_dir = "reg_reg"\nis_reg = true');
    const items = await scanDatasets(c.datasets);
    // 6 training samples: r0..r3 once (4), then r0 and r1 once more (6)
    expect(items.filter((i) => i.isReg).map((i) => i.repeats)).toEqual([2, 2, 1, 1]);
    const few = config('[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = "reg_train"\nnum_repeats = 1\n[[datasets.subsets]]\nimage_dir = "reg_reg"\nis_reg = true');
    expect((await scanDatasets(few.datasets)).filter((i) => i.isReg).map((i) => i.repeats)).toEqual([1, 1, 1, 0]);
  });

  it('names images without captions', async () => {
    await folder('bad_caption', [{ n: 'ok' }, { n: 'nocap', caption: null }]);
    await expectDatasetError(config('[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = "bad_caption"'), /1 image\(s\) have no caption file: bad_caption\/nocap\.png/, /nocap\.txt/);
  });

  it('names images that do not decode', async () => {
    const dir = await folder('bad_decode', [{ n: 'ok' }]);
    writeFileSync(join(dir, 'broken.png'), Buffer.from('\x89PNG\r\n\x1a\nnot really a png'));
    writeFileSync(join(dir, 'broken.txt'), 'x');
    await expectDatasetError(config('[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = "bad_decode"'), /do not decode: bad_decode\/broken\.png/);
  });

  it('says which channel modes were found and how to convert', async () => {
    await folder('bad_modes', [{ n: 'rgb' }, { n: 'gray', channels: 1 }, { n: 'alpha', channels: 4 }]);
    await expectDatasetError(
      config('[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = "bad_modes"'),
      /mixed channel modes \(1 RGBA, 1 grayscale, 1 RGB\)/,
      /grayscale: bad_modes\/gray\.png/,
      /RGBA: bad_modes\/alpha\.png/,
      /convert them first/,
    );
  });

  it('refuses buckets with fewer images than a batch, naming them', async () => {
    await folder('thin', [{ n: 's0' }, { n: 's1' }, { n: 'tall', w: 32, h: 128 }]);
    await expectDatasetError(
      config('[[datasets]]\nresolution = 64\nbatch_size = 2\nenable_bucket = true\nmin_bucket_reso = 32\nmax_bucket_reso = 128\nbucket_reso_steps = 32\n[[datasets.subsets]]\nimage_dir = "thin"'),
      /too few images for the bucket sizes at batch size 2: bucket 32x128 has 1 image\(s\).*thin\/tall\.png/,
    );
  });

  it('reports an empty folder', async () => {
    mkdirSync(join(root, 'empty'), { recursive: true });
    await expectDatasetError(config('[[datasets]]\nresolution = 64\n[[datasets.subsets]]\nimage_dir = "empty"'), /no images .* in empty/);
  });
});
