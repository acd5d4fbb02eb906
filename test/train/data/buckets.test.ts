import { describe, expect, it } from 'vitest';
import { centerCrop, makeBucketResolutions, selectBucket, selectBucketNoUpscale } from '../../../src/train/data/buckets.ts';

// Expected values worked by hand from kohya's make_bucket_resolutions / select_bucket:
// height = min(max_size, (max_area // width) // 64 * 64), kept when >= min_size.
describe('kohya bucket arithmetic', () => {
  it('makes the 17 SD 1.5 buckets at 512x512, min 256, max 1024, step 64', () => {
    // 256 -> 1024, 320 -> 768 (819//64=12), 384 -> 640 (682//64=10), 448 -> 576 (585//64=9),
    // 512 -> 512, 704 -> 320 (372//64=5), 832/896/960 -> 256 (4*64); square 512
    expect(makeBucketResolutions([512, 512], 256, 1024, 64)).toEqual([
      [256, 832], [256, 896], [256, 960], [256, 1024], [320, 704], [320, 768], [384, 640], [448, 576], [512, 512],
      [576, 448], [640, 384], [704, 320], [768, 320], [832, 256], [896, 256], [960, 256], [1024, 256],
    ]);
  });

  it('makes small buckets for a 64x64 model with step 8', () => {
    // area 4096: 48 -> 85//8*8 = 80 (capped at 80), 56 -> 73//8=9 -> 72, 64 -> 64, 72 -> 56, 80 -> 48
    expect(makeBucketResolutions([64, 64], 48, 80, 8)).toEqual([[48, 80], [56, 72], [64, 64], [72, 56], [80, 48]]);
  });

  const resos = makeBucketResolutions([512, 512], 256, 1024, 64);

  it('keeps an image whose size is a bucket', () => {
    expect(selectBucket(resos, 448, 576)).toMatchObject({ reso: [448, 576], resized: [448, 576] });
  });

  it('matches the aspect ratio exactly when a bucket has it', () => {
    // 1000/600 = 640/384; not wider than the bucket, so the width sets the scale (0.64)
    expect(selectBucket(resos, 1000, 600)).toMatchObject({ reso: [640, 384], resized: [640, 384] });
  });

  it('picks the nearest ratio and scales to cover it, rounding half up', () => {
    // 700x500 = 1.4: 576/448 = 1.2857 (error 0.114) beats 640/384 (0.267); wider than the
    // bucket, so height sets the scale 448/500: 700*0.896 = 627.2 -> 627
    const c = selectBucket(resos, 700, 500);
    expect(c.reso).toEqual([576, 448]);
    expect(c.resized).toEqual([627, 448]);
    expect(c.arError).toBeCloseTo(576 / 448 - 1.4, 12);
    expect(centerCrop(c.resized, c.reso)).toEqual({ left: 25, top: 0 });
  });

  it('no_upscale keeps small images and shrinks large ones to the area', () => {
    expect(selectBucketNoUpscale(512 * 512, 64, 300, 200)).toMatchObject({ reso: [256, 192], resized: [300, 200] });
    expect(selectBucketNoUpscale(512 * 512, 64, 1000, 1000)).toMatchObject({ reso: [512, 512], resized: [512, 512] });
    // 1200x600: width route 724 -> 704 x 320 (ratio 2.2), height route 362 -> 320 x 640
    // (ratio 2.0, exact): the height route wins, resized (640, 320)
    expect(selectBucketNoUpscale(512 * 512, 64, 1200, 600)).toMatchObject({ reso: [640, 320], resized: [640, 320] });
  });
});
