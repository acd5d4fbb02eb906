// Image safety checks run on every decoded output and on every init image: sexual content
// (nsfwjs), faces with estimated age and protected likeness (@vladmandic/human).
import { bestLikenessMatch, type ProtectedEmbedding } from '../likeness/match.ts';
import {
  assertIntensity,
  decideInitImage,
  decideOutput,
  type CheckReason,
  type ConsentContext,
  type ImageScores,
  type InitImageDecision,
} from './decide.ts';
import { FaceAnalyzer } from './faces.ts';
import { assertRgbImage, blurImage, type RgbImage } from './image.ts';
import { NsfwClassifier, PHOTO_CLASSES, sumClasses } from './nsfw.ts';
import { resolveOutputCheckOptions, type OutputCheckOptions, type OutputCheckOptionsInput } from './options.ts';
import { SdSafetyChecker } from './sd-safety-checker.ts';
import { withPixelTensor } from './tfjs.ts';

export interface OutputCheckResult {
  verdict: 'pass' | 'block' | 'blur';
  reasons: CheckReason[];
  scores: ImageScores;
  /** What may be stored and returned: the input on pass, the blurred copy on blur, nothing on block. */
  image?: RgbImage;
}

export type InitImageCheckResult = InitImageDecision & { scores: ImageScores };

export interface OutputCheckContext {
  /** The effective graded intensity (0-3) the image was generated at. */
  intensity: number;
}

export interface InitImageCheckContext extends OutputCheckContext {
  consent: ConsentContext;
}

/** Where registered protected faces come from; read on every check so new registrations apply at once. */
export type LikenessGallery = () => readonly ProtectedEmbedding[];

export interface ImageChecksSetup {
  options?: OutputCheckOptionsInput;
  likeness?: LikenessGallery;
  /** diffusers' safety_checker weights (model.safetensors; config.json beside it or given). */
  sdSafetyChecker?: { weights: string; config?: string };
}

export class ImageSafetyChecks {
  private constructor(
    readonly options: OutputCheckOptions,
    private readonly nsfw: NsfwClassifier,
    private readonly faces: FaceAnalyzer,
    private readonly likeness: LikenessGallery,
    private readonly sdChecker: SdSafetyChecker | undefined,
    /** The models run one image at a time; instances made by withOptions share this queue. */
    private readonly lane: { tail: Promise<unknown> } = { tail: Promise.resolve() },
  ) {}

  /** Loads both classifiers from files inside node_modules (no network). */
  static async load(setup: ImageChecksSetup = {}): Promise<ImageSafetyChecks> {
    const options = resolveOutputCheckOptions(setup.options);
    const faces = await FaceAnalyzer.load({ minDetectorScore: Math.min(0.2, options.minFaceScore) });
    const nsfw = await NsfwClassifier.load();
    const sd = setup.sdSafetyChecker ? await SdSafetyChecker.load(setup.sdSafetyChecker.weights, setup.sdSafetyChecker.config) : undefined;
    const checks = new ImageSafetyChecks(options, nsfw, faces, setup.likeness ?? (() => []), sd);
    // The first run of each graph compiles its kernels (several hundred ms); pay that here,
    // not on the first request.
    await checks.measure({ data: new Uint8Array(64 * 64 * 3).fill(128), width: 64, height: 64 });
    return checks;
  }

  /** Same models, other thresholds (e.g. another role's policy). */
  withOptions(options: OutputCheckOptionsInput): ImageSafetyChecks {
    return new ImageSafetyChecks(resolveOutputCheckOptions(options), this.nsfw, this.faces, this.likeness, this.sdChecker, this.lane);
  }

  private serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.lane.tail.then(task, task);
    this.lane.tail = run.catch(() => undefined);
    return run;
  }

  /** Raw measurements, without any verdict. */
  measure(image: RgbImage): Promise<ImageScores> {
    assertRgbImage(image);
    return this.serial(async () => {
      // One upload of the pixels for both models.
      const { nsfw, detected } = await withPixelTensor(this.nsfw.engine, image, async (pixels) => ({
        nsfw: await this.nsfw.classifyPixels(pixels),
        detected: await this.faces.analyzePixels(pixels),
      }));
      const gallery = this.likeness();
      const faces = detected
        .filter((f) => f.score >= this.options.minFaceScore)
        .map((f) => {
          const likeness = bestLikenessMatch(f.embedding, gallery);
          return { box: f.box, score: f.score, age: f.age, ...(likeness ? { likeness } : {}) };
        });
      const scores: ImageScores = { nsfw, photo: sumClasses(nsfw, PHOTO_CLASSES), faces };
      if (this.sdChecker) scores.sdSafetyChecker = await this.sdChecker.check(image);
      return scores;
    });
  }

  async checkOutput(image: RgbImage, context: OutputCheckContext): Promise<OutputCheckResult> {
    assertIntensity(context.intensity);
    const scores = await this.measure(image);
    const decision = decideOutput(scores, context.intensity, this.options);
    if (decision.verdict === 'pass') return { ...decision, scores, image };
    if (decision.verdict === 'blur') return { ...decision, scores, image: await blurImage(image) };
    return { ...decision, scores };
  }

  async checkInitImage(image: RgbImage, context: InitImageCheckContext): Promise<InitImageCheckResult> {
    assertIntensity(context.intensity);
    const scores = await this.measure(image);
    return { ...decideInitImage(scores, context.intensity, context.consent, this.options), scores };
  }
}

/** img2img / inpainting gate: call before any sampling; on 'block' do not sample. */
export function checkInitImage(checks: ImageSafetyChecks, image: RgbImage, context: InitImageCheckContext): Promise<InitImageCheckResult> {
  return checks.checkInitImage(image, context);
}

/** Every decoded image goes through this before it is stored or returned. */
export function checkOutputImage(checks: ImageSafetyChecks, image: RgbImage, context: OutputCheckContext): Promise<OutputCheckResult> {
  return checks.checkOutput(image, context);
}
