import { afterAll, beforeAll } from 'vitest';
import { embeddedModelPath } from '../../src/pipeline/embedded.ts';
import { StableDiffusionModel } from '../../src/pipeline/model.ts';

/**
 * Loads the embedded model (models/redline-tiny) once before the tests of the calling scope
 * (a file or a describe block), hands it to `set`, and releases it after them. A missing
 * model fails the file at collection rather than skipping its tests.
 */
export function useEmbeddedModel(set: (model: StableDiffusionModel) => void): void {
  const modelPath = embeddedModelPath();
  if (!modelPath) throw new Error('models/redline-tiny is missing: these tests need the embedded model');
  let model: StableDiffusionModel | undefined;
  beforeAll(async () => {
    model = await StableDiffusionModel.load(modelPath);
    set(model);
  }, 120_000);
  afterAll(async () => {
    await model?.release();
  });
}
