// Face detection, age estimate and identity embedding with @vladmandic/human on the same
// tfjs wasm engine. Only the face pipeline runs: blazeface (detector) -> facemesh (aligns
// the crop) -> faceres (age, gender, 1024-d descriptor used as the likeness embedding).
import { dirname, resolve } from 'node:path';
import type { Config, Human } from '@vladmandic/human';
import { RedlineError } from '../../errors.ts';
import { assertRgbImage, type RgbImage } from './image.ts';
import { loadTf, tfRequire, withPixelTensor, type Tf } from './tfjs.ts';

export interface DetectedFace {
  /** [x, y, width, height] in pixels of the analysed image. */
  box: [number, number, number, number];
  /** Detector confidence, 0..1. */
  score: number;
  /** Estimated age in years (faceres). */
  age: number;
  /** faceres descriptor; compared by cosine similarity for protected likeness. */
  embedding: Float32Array;
}

export const FACE_EMBEDDING_SIZE = 1024;

/** The package folder; its "exports" map has no entry for the wasm build or the models. */
export function humanPackageDir(): string {
  return resolve(dirname(tfRequire.resolve('@vladmandic/human')), '..');
}

function humanConfig(maxFaces: number, minDetectorScore: number): Partial<Config> {
  const off = { enabled: false };
  return {
    backend: 'wasm',
    modelBasePath: `file://${humanPackageDir()}/models/`,
    cacheModels: false,
    // No frame-to-frame caching or skipping: every image is analysed from scratch, so the
    // same image always gives the same result.
    cacheSensitivity: 0,
    skipAllowed: false,
    warmup: 'none',
    debug: false,
    filter: { ...off, return: false },
    gesture: off,
    body: off,
    hand: off,
    object: off,
    segmentation: off,
    face: {
      enabled: true,
      detector: { rotation: false, maxDetected: maxFaces, minConfidence: minDetectorScore, return: false },
      mesh: { enabled: true },
      iris: off,
      emotion: off,
      attention: off,
      antispoof: off,
      liveness: off,
      description: { enabled: true },
    },
  } as Partial<Config>;
}

export class FaceAnalyzer {
  private constructor(
    private readonly tf: Tf,
    private readonly human: Human,
  ) {}

  static async load(options: { maxFaces?: number; minDetectorScore?: number } = {}): Promise<FaceAnalyzer> {
    const tf = await loadTf();
    const { Human: HumanClass } = tfRequire(`${humanPackageDir()}/dist/human.node-wasm.js`) as typeof import('@vladmandic/human');
    const human = new HumanClass(humanConfig(options.maxFaces ?? 20, options.minDetectorScore ?? 0.2));
    await human.load();
    // human logs load failures instead of throwing; a check that silently lost its model
    // would pass everything.
    const missing = ['blazeface', 'facemesh', 'faceres'].filter((name) => !human.models.stats().modelStats?.some((m) => m.name === name && m.loaded));
    if (missing.length > 0) {
      throw new RedlineError('safety_model_missing', `Face models failed to load: ${missing.join(', ')}.`, `Check that ${humanPackageDir()}/models holds them (npm install).`);
    }
    return new FaceAnalyzer(tf, human);
  }

  async analyze(image: RgbImage): Promise<DetectedFace[]> {
    assertRgbImage(image);
    return withPixelTensor(this.tf, image, (pixels) => this.analyzePixels(pixels));
  }

  /** `pixels`: int32 [H, W, 3] 0..255, as ImageSafetyChecks shares it with the nsfw model. */
  async analyzePixels(pixels: import('@tensorflow/tfjs-core').Tensor3D): Promise<DetectedFace[]> {
    const input = this.tf.tidy(() => this.tf.expandDims(this.tf.cast(pixels, 'float32'), 0));
    try {
      const result = await this.human.detect(input as never);
      if (result.error) {
        throw new RedlineError('face_check_failed', `Face analysis failed: ${result.error}.`);
      }
      return result.face.map((f) => {
        if (!f.embedding || f.embedding.length !== FACE_EMBEDDING_SIZE) {
          throw new RedlineError('face_check_failed', `Face analysis returned no ${FACE_EMBEDDING_SIZE}-d embedding.`);
        }
        return {
          box: [...f.box] as [number, number, number, number],
          score: f.score,
          age: f.age ?? Number.NaN,
          embedding: Float32Array.from(f.embedding),
        };
      });
    } finally {
      input.dispose();
    }
  }
}
