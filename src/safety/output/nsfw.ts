// Sexual-content classifier: nsfwjs with the MobileNetV2 model bundled in the package
// (weights ship as base64 JS modules, so nothing is fetched).
import { RedlineError } from '../../errors.ts';
import { assertRgbImage, type RgbImage } from './image.ts';
import { loadTf, withPixelTensor, type Tf } from './tfjs.ts';

export const NSFW_CLASSES = ['Drawing', 'Hentai', 'Neutral', 'Porn', 'Sexy'] as const;
export type NsfwClass = (typeof NSFW_CLASSES)[number];
export type NsfwScores = Record<NsfwClass, number>;

/** The classes nsfwjs uses for photographs (the others are drawings/illustration). */
export const PHOTO_CLASSES: readonly NsfwClass[] = ['Neutral', 'Sexy', 'Porn'];

export function sumClasses(scores: NsfwScores, classes: readonly NsfwClass[]): number {
  return classes.reduce((sum, c) => sum + scores[c], 0);
}

interface NsfwModel {
  classify(img: unknown, topk?: number): Promise<{ className: string; probability: number }[]>;
  dispose(): void;
}

export class NsfwClassifier {
  private constructor(
    private readonly tf: Tf,
    private readonly model: NsfwModel,
  ) {}

  static async load(): Promise<NsfwClassifier> {
    const tf = await loadTf();
    const { NSFWJS } = await import('nsfwjs');
    const { MobileNetV2Model } = await import('nsfwjs/models/mobilenet_v2');
    const modelJson = (await MobileNetV2Model.modelJson()).default;
    const shards = await Promise.all(MobileNetV2Model.weightBundles.map(async (bundle) => (await bundle()).default));
    const byName = new Map(shards.map((b64, i) => [`group1-shard${i + 1}of${shards.length}`, Buffer.from(b64, 'base64')]));
    const weightSpecs: import('@tensorflow/tfjs-core').io.WeightsManifestEntry[] = [];
    const weightParts: Buffer[] = [];
    for (const group of modelJson.weightsManifest ?? []) {
      weightSpecs.push(...group.weights);
      for (const path of group.paths) {
        const part = byName.get(path);
        if (!part) throw new RedlineError('safety_model_missing', `nsfwjs MobileNetV2 weight shard ${path} is missing.`, 'Reinstall the npm dependencies (npm install).');
        weightParts.push(part);
      }
    }
    const weights = Buffer.concat(weightParts);
    const handler = {
      load: async () => ({
        modelTopology: modelJson.modelTopology,
        format: modelJson.format,
        weightSpecs,
        weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
      }),
    };
    const model = new NSFWJS(handler, { size: 224 });
    await model.load();
    return new NsfwClassifier(tf, model as unknown as NsfwModel);
  }

  async classify(image: RgbImage): Promise<NsfwScores> {
    assertRgbImage(image);
    return withPixelTensor(this.tf, image, (pixels) => this.classifyPixels(pixels));
  }

  /** `pixels`: int32 [H, W, 3] 0..255. */
  async classifyPixels(pixels: import('@tensorflow/tfjs-core').Tensor3D): Promise<NsfwScores> {
    const predictions = await this.model.classify(pixels, NSFW_CLASSES.length);
    const scores = Object.fromEntries(NSFW_CLASSES.map((c) => [c, 0])) as NsfwScores;
    for (const p of predictions) scores[p.className as NsfwClass] = p.probability;
    return scores;
  }

  /** The tfjs engine the model runs on. */
  get engine(): Tf {
    return this.tf;
  }

  dispose(): void {
    this.model.dispose();
  }
}
