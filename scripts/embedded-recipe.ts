// The embedded model's recipe (recipes/redline-tiny): its files and the scene sets they
// name, shared by the training script and the evaluation so both see the same split.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SD15Configs } from '../src/models/checkpoint/configs.ts';
import { SeededRandom } from '../src/train/procedural/random.ts';
import { captionOf, sampleScene, type SceneSpec } from '../src/train/procedural/scenes.ts';

export interface Recipe {
  seed: number;
  dataset: { count: number; seed: number; size: number };
  heldOut: { count: number; seed: number };
  tokenizer: { maxMerges: number; minFrequency: number };
  /** init 'block-average': start from the 8x8 block-average autoencoder (initVaeAsBlockAverage). */
  vae: { steps: number; batch: number; imageSize: number; lr: number; warmup: number; latentPenalty: number; init?: 'random' | 'block-average' };
  /** minSnrGamma: weight each sample's loss by min(SNR, gamma) / SNR (Hang et al., 2023). */
  diffusion: { steps: number; batch: number; lr: number; warmup: number; captionDropout: number; minSnrGamma?: number };
}

export function readRecipe(dir: string): { configs: SD15Configs; recipe: Recipe } {
  return {
    configs: JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8')) as SD15Configs,
    recipe: JSON.parse(readFileSync(join(dir, 'train.json'), 'utf8')) as Recipe,
  };
}

/** Captions never seen in training (the evaluation's prompts). */
export function heldOutScenes(r: Recipe): SceneSpec[] {
  const rng = new SeededRandom(r.heldOut.seed);
  return Array.from({ length: r.heldOut.count }, () => sampleScene(rng));
}

/** The training scenes: drawn from the dataset seed, skipping any held-out caption. */
export function trainingScenes(r: Recipe): SceneSpec[] {
  const held = new Set(heldOutScenes(r).map((s) => captionOf(s)));
  const rng = new SeededRandom(r.dataset.seed);
  const out: SceneSpec[] = [];
  while (out.length < r.dataset.count) {
    const s = sampleScene(rng);
    if (!held.has(captionOf(s))) out.push(s);
  }
  return out;
}
