// A kohya-style dataset: folders of images with same-name caption files, repeats,
// regularisation images, buckets, and the epoch's batch order. Everything a user can get
// wrong (missing captions, undecodable images, mixed channel modes, too few images for the
// batch size) is found in one pass before training and reported with the files involved.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, extname, join, relative } from 'node:path';
import sharp, { type Metadata } from 'sharp';
import { RedlineError } from '../../errors.ts';
import { centerCrop, makeBucketResolutions, type Reso, selectBucket, selectBucketNoUpscale } from './buckets.ts';
import { parseCaption } from './captions.ts';
import type { DatasetConfig, SubsetConfig } from './config.ts';
import type { TrainRng } from './rng.ts';

export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.webp', '.bmp'];

export interface ImageItem {
  path: string;
  /** Caption text with the intensity tag removed (before per-step shuffling/dropout). */
  caption: string;
  intensity: number | null;
  width: number;
  height: number;
  bucket: Reso;
  resized: Reso;
  isReg: boolean;
  /** How many times the item appears per epoch (kohya num_repeats, reg balancing included). */
  repeats: number;
  subset: SubsetConfig;
  /** Index of the dataset in the config. */
  dataset: number;
}

export interface DatasetProblem {
  file: string;
  problem: string;
}

function list(paths: string[], n = 8): string {
  return paths.slice(0, n).join(', ') + (paths.length > n ? `, ... (${paths.length - n} more)` : '');
}

interface ScannedImage {
  path: string;
  subset: SubsetConfig;
  dataset: number;
  caption: string;
  intensity: number | null;
  width: number;
  height: number;
  channels: string;
}

function channelMode(meta: Metadata): string {
  if (meta.space === 'cmyk') return 'CMYK';
  const c = meta.channels ?? 0;
  if (c === 1) return 'grayscale';
  if (c === 2) return 'grayscale+alpha';
  if (c === 4) return 'RGBA';
  return c === 3 ? 'RGB' : `${c}-channel`;
}

/** Reads every subset's images and captions and checks them; throws one RedlineError that
 * lists every problem found (grouped by kind, naming files). */
export async function scanDatasets(datasets: DatasetConfig[], opts: { root?: string } = {}): Promise<ImageItem[]> {
  const rel = (p: string): string => (opts.root ? relative(opts.root, p) || p : p);
  const scanned: ScannedImage[] = [];
  const missingCaptions: string[] = [];
  const undecodable: string[] = [];
  const captionErrors: string[] = [];
  const emptyDirs: string[] = [];
  for (const [di, ds] of datasets.entries()) {
    for (const sub of ds.subsets) {
      if (!existsSync(sub.imageDir) || !statSync(sub.imageDir).isDirectory()) {
        throw new RedlineError('dataset_missing', `image_dir ${sub.imageDir} is not a folder.`, 'Check image_dir in the config (paths are relative to the config file).');
      }
      const images = readdirSync(sub.imageDir).filter((n) => !n.startsWith('.') && IMAGE_EXTENSIONS.includes(extname(n).toLowerCase())).sort();
      if (images.length === 0) emptyDirs.push(sub.imageDir);
      for (const name of images) {
        const path = join(sub.imageDir, name);
        const capPath = join(sub.imageDir, basename(name, extname(name)) + sub.captionExtension);
        let raw: string;
        if (existsSync(capPath)) raw = readFileSync(capPath, 'utf8');
        else if (sub.classTokens !== null) raw = sub.classTokens;
        else {
          missingCaptions.push(rel(path));
          continue;
        }
        let parsed;
        try {
          parsed = parseCaption(raw, rel(capPath));
        } catch (err) {
          if (err instanceof RedlineError) {
            captionErrors.push(err.message);
            continue;
          }
          throw err;
        }
        let meta: Metadata;
        try {
          // full decode: a broken file can have a valid header
          const img = sharp(path, { failOn: 'error' });
          meta = await img.metadata();
          await img.raw().toBuffer();
        } catch {
          undecodable.push(rel(path));
          continue;
        }
        scanned.push({ path, subset: sub, dataset: di, caption: parsed.text, intensity: parsed.intensity, width: meta.width!, height: meta.height!, channels: channelMode(meta) });
      }
    }
  }
  const problems: string[] = [];
  if (emptyDirs.length) problems.push(`no images (${IMAGE_EXTENSIONS.join(' ')}) in ${list(emptyDirs.map(rel))}.`);
  if (missingCaptions.length) {
    problems.push(`${missingCaptions.length} image(s) have no caption file: ${list(missingCaptions)}. Write a same-name caption file (e.g. ${basename(missingCaptions[0]!, extname(missingCaptions[0]!))}${datasets[0]!.subsets[0]!.captionExtension}) next to each, or set class_tokens for the subset.`);
  }
  if (undecodable.length) problems.push(`${undecodable.length} image(s) do not decode: ${list(undecodable)}. Re-export them or remove them from the folder.`);
  problems.push(...captionErrors);
  const modes = new Map<string, string[]>();
  for (const s of scanned) modes.set(s.channels, [...(modes.get(s.channels) ?? []), rel(s.path)]);
  const nonRgb = [...modes].filter(([m]) => m !== 'RGB');
  if (nonRgb.length) {
    const found = [...modes].map(([m, files]) => `${files.length} ${m}`).join(', ');
    const detail = nonRgb.map(([m, files]) => `${m}: ${list(files, 5)}`).join('; ');
    problems.push(
      `the images have ${modes.size > 1 ? 'mixed channel modes' : 'a channel mode other than RGB'} (${found}); ${detail}. ` +
        'Training reads RGB: convert them first (grayscale: e.g. `magick mogrify -colorspace sRGB -type TrueColor FILE`; RGBA: flatten onto the background you want, e.g. `magick mogrify -background white -flatten FILE`), so no pixel is guessed.',
    );
  }
  if (problems.length) throw new RedlineError('dataset_invalid', `The dataset has problems:\n- ${problems.join('\n- ')}`);
  return assignBuckets(datasets, scanned, rel);
}

function assignBuckets(datasets: DatasetConfig[], scanned: ScannedImage[], rel: (p: string) => string): ImageItem[] {
  const items: ImageItem[] = [];
  for (const [di, ds] of datasets.entries()) {
    const resos = ds.enableBucket ? makeBucketResolutions(ds.resolution, ds.minBucketReso, ds.maxBucketReso, ds.bucketResoSteps) : [ds.resolution];
    const mine = scanned.filter((s) => s.dataset === di);
    for (const s of mine) {
      const choice = ds.enableBucket && ds.bucketNoUpscale
        ? selectBucketNoUpscale(ds.resolution[0] * ds.resolution[1], ds.bucketResoSteps, s.width, s.height)
        : selectBucket(resos, s.width, s.height);
      items.push({ path: s.path, caption: s.caption, intensity: s.intensity, width: s.width, height: s.height, bucket: choice.reso, resized: choice.resized, isReg: s.subset.isReg, repeats: s.subset.numRepeats, subset: s.subset, dataset: di });
    }
    balanceRegularisation(items.filter((i) => i.dataset === di));
    // every bucket must fill at least one whole batch, or its images would train at a
    // smaller batch than asked (and a lone image per bucket is usually a resolution mistake)
    const perBucket = new Map<string, ImageItem[]>();
    for (const it of items.filter((i) => i.dataset === di && i.repeats > 0)) {
      const k = it.bucket.join('x');
      perBucket.set(k, [...(perBucket.get(k) ?? []), it]);
    }
    const thin = [...perBucket].filter(([, its]) => its.reduce((n, i) => n + i.repeats, 0) < ds.batchSize);
    if (thin.length) {
      throw new RedlineError(
        'dataset_too_small',
        `Dataset #${di + 1}: too few images for the bucket sizes at batch size ${ds.batchSize}: ` +
          thin.map(([k, its]) => `bucket ${k} has ${its.length} image(s) x repeats (${list(its.map((i) => rel(i.path)), 4)})`).join('; ') + '.',
        'Add images of that shape, raise num_repeats, lower batch_size, or widen bucket_reso_steps so they share a bucket.',
      );
    }
  }
  return items;
}

/** kohya DreamBooth: regularisation images repeat until they match the training images'
 * count (with repeats): each gets its subset's repeats once, then +1 in turn. */
function balanceRegularisation(items: ImageItem[]): void {
  const train = items.filter((i) => !i.isReg).reduce((n, i) => n + i.repeats, 0);
  const reg = items.filter((i) => i.isReg);
  if (!reg.length) return;
  let n = 0;
  let first = true;
  const registered: ImageItem[] = [];
  while (n < train) {
    for (const it of reg) {
      if (first) {
        registered.push(it);
        n += it.repeats;
      } else {
        it.repeats += 1;
        n += 1;
      }
      if (n >= train) break;
    }
    first = false;
  }
  // kohya registers only the reg images reached before the count was met
  for (const it of reg) if (!registered.includes(it)) it.repeats = 0;
}

export interface BatchRef {
  dataset: number;
  bucket: Reso;
  items: ImageItem[];
}

/** One epoch's batches, as kohya orders them: each bucket holds its images repeated, shuffled;
 * cut into batches (the last may be short); the list of all batches shuffled. */
export function epochBatches(datasets: DatasetConfig[], items: ImageItem[], rng: TrainRng): BatchRef[] {
  const batches: BatchRef[] = [];
  for (const [di, ds] of datasets.entries()) {
    const buckets = new Map<string, ImageItem[]>();
    for (const it of items) {
      if (it.dataset !== di) continue;
      const k = it.bucket.join('x');
      const b = buckets.get(k) ?? [];
      for (let r = 0; r < it.repeats; r++) b.push(it);
      buckets.set(k, b);
    }
    for (const k of [...buckets.keys()].sort()) {
      const b = rng.shuffle(buckets.get(k)!);
      for (let i = 0; i < b.length; i += ds.batchSize) batches.push({ dataset: di, bucket: b[0]!.bucket, items: b.slice(i, i + ds.batchSize) });
    }
  }
  return rng.shuffle(batches);
}

/** The image resized and centre-cropped to its bucket (kohya: INTER_AREA down, LANCZOS up;
 * sharp's lanczos3 both ways), as [-1, 1] NCHW floats for the VAE encoder. */
export async function loadTrainingImage(item: ImageItem): Promise<{ data: Float32Array; width: number; height: number }> {
  const [w, h] = item.bucket;
  const { left, top } = centerCrop(item.resized, item.bucket);
  const rgb = await sharp(item.path)
    .resize(item.resized[0], item.resized[1], { fit: 'fill', kernel: 'lanczos3' })
    .extract({ left, top, width: w, height: h })
    .toColourspace('srgb') // 8 bits per channel, also for 16-bit PNGs
    .raw()
    .toBuffer();
  const plane = w * h;
  const data = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) for (let c = 0; c < 3; c++) data[c * plane + i] = (rgb[i * 3 + c]! / 255) * 2 - 1;
  return { data, width: w, height: h };
}
