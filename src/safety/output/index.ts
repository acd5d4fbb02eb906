export { ImageSafetyChecks, checkInitImage, checkOutputImage } from './checks.ts';
export type { ImageChecksSetup, InitImageCheckContext, InitImageCheckResult, LikenessGallery, OutputCheckContext, OutputCheckResult } from './checks.ts';
export { decideInitImage, decideOutput, isSexual } from './decide.ts';
export type { CheckReason, CheckReasonCode, ConsentContext, FaceScores, ImageScores } from './decide.ts';
export { DEFAULT_OUTPUT_CHECK_OPTIONS, outputCheckOptionsFromPolicy, resolveOutputCheckOptions } from './options.ts';
export type { NsfwThresholds, OutputCheckOptions, OutputCheckOptionsInput, PolicyOutputChecks, SexualContentAction } from './options.ts';
export { blurImage, readImageFile } from './image.ts';
export type { RgbImage } from './image.ts';
