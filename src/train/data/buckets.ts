// Aspect-ratio bucketing with kohya sd-scripts' arithmetic (library/model_util.py
// make_bucket_resolutions, library/train_util.py BucketManager.select_bucket): the same
// image lands in the same bucket, resized and cropped to the same box, as in kohya.

export type Reso = readonly [width: number, height: number];

/** kohya make_bucket_resolutions: the square of the max area, then for each width from
 * min_size to max_size in steps of `divisible` the tallest height within the area (capped at
 * max_size, dropped below min_size), both orientations; sorted by (width, height). */
export function makeBucketResolutions(maxReso: Reso, minSize = 256, maxSize = 1024, divisible = 64): Reso[] {
  const maxArea = maxReso[0] * maxReso[1];
  const resos = new Map<string, Reso>();
  const add = (w: number, h: number): void => void resos.set(`${w}x${h}`, [w, h]);
  const square = Math.floor(Math.sqrt(maxArea) / divisible) * divisible;
  add(square, square);
  for (let width = minSize; width <= maxSize; width += divisible) {
    const height = Math.min(maxSize, Math.floor(Math.floor(maxArea / width) / divisible) * divisible);
    if (height >= minSize) {
      add(width, height);
      add(height, width);
    }
  }
  return [...resos.values()].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
}

export interface BucketChoice {
  /** The bucket (training size) in pixels. */
  reso: Reso;
  /** The size the image is resized to before the centre crop to `reso`. */
  resized: Reso;
  /** Bucket aspect ratio minus image aspect ratio. */
  arError: number;
}

/** kohya select_bucket with upscaling: the image's own size if it is a bucket, else the
 * bucket of nearest aspect ratio (the first on ties, as numpy argmin); then the scale that
 * makes the image cover the bucket, sides rounded half up. */
export function selectBucket(resos: readonly Reso[], width: number, height: number): BucketChoice {
  const aspect = width / height;
  let reso = resos.find((r) => r[0] === width && r[1] === height);
  if (!reso) {
    let best = 0;
    let bestErr = Infinity;
    resos.forEach((r, i) => {
      const e = Math.abs(r[0] / r[1] - aspect);
      if (e < bestErr) {
        bestErr = e;
        best = i;
      }
    });
    reso = resos[best]!;
  }
  const scale = aspect > reso[0] / reso[1] ? reso[1] / height : reso[0] / width;
  const resized: Reso = [Math.floor(width * scale + 0.5), Math.floor(height * scale + 0.5)];
  return { reso, resized, arError: reso[0] / reso[1] - aspect };
}

/** kohya round_to_steps: round half up, then down to a multiple of the step. */
function roundToSteps(x: number, steps: number): number {
  const r = Math.floor(x + 0.5);
  return r - (r % steps);
}

/** kohya select_bucket with bucket_no_upscale: images within the max area keep their size;
 * larger ones shrink to the max area at their aspect ratio (whichever side's rounding keeps
 * the ratio better); the bucket is the resized size cut down to multiples of the step. */
export function selectBucketNoUpscale(maxArea: number, steps: number, width: number, height: number): BucketChoice {
  const aspect = width / height;
  let resized: Reso = [width, height];
  if (width * height > maxArea) {
    const rw = Math.sqrt(maxArea * aspect);
    const rh = maxArea / rw;
    const bWidthRounded = roundToSteps(rw, steps);
    const bHeightInWr = roundToSteps(bWidthRounded / aspect, steps);
    const arWidthRounded = bWidthRounded / bHeightInWr;
    const bHeightRounded = roundToSteps(rh, steps);
    const bWidthInHr = roundToSteps(bHeightRounded * aspect, steps);
    const arHeightRounded = bWidthInHr / bHeightRounded;
    resized = Math.abs(arWidthRounded - aspect) < Math.abs(arHeightRounded - aspect)
      ? [bWidthRounded, Math.floor(bWidthRounded / aspect + 0.5)]
      : [Math.floor(bHeightRounded * aspect + 0.5), bHeightRounded];
  }
  const reso: Reso = [resized[0] - (resized[0] % steps), resized[1] - (resized[1] % steps)];
  return { reso, resized, arError: reso[0] / reso[1] - aspect };
}

/** Centre crop offsets (kohya trim_and_resize_if_required without random_crop). */
export function centerCrop(resized: Reso, reso: Reso): { left: number; top: number } {
  return { left: Math.floor((resized[0] - reso[0]) / 2), top: Math.floor((resized[1] - reso[1]) / 2) };
}
