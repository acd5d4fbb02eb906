// Writes procedural scenes as a kohya-style dataset folder: NAME.png + NAME.txt caption.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { SeededRandom } from './random.ts';
import { captionOf, renderScene, sampleScene, type SceneSpec, type SplatterLevel } from './scenes.ts';

export interface SceneDatasetOptions {
  count: number;
  seed: number;
  size?: number;
  /** Splatter level per image: a fixed level, 'graded' to cycle 0..3, or a list of levels
   * to cycle through (demo adapter data). */
  splatter?: SplatterLevel | 'graded' | readonly SplatterLevel[];
  /** Append `intensity:N` to captions (the trainer's graded-intensity signal). */
  intensityTags?: boolean;
  /** Name the splatter in the caption ("some red paint splatter"); default true. An adapter
   * meant to add the effect to any prompt is trained with captions that do not name it. */
  describeSplatter?: boolean;
  onProgress?: (done: number, total: number) => void;
}

export async function writeSceneDataset(dir: string, opts: SceneDatasetOptions): Promise<SceneSpec[]> {
  mkdirSync(dir, { recursive: true });
  const rng = new SeededRandom(opts.seed);
  const size = opts.size ?? 128;
  const specs: SceneSpec[] = [];
  for (let i = 0; i < opts.count; i++) {
    const cycle: readonly SplatterLevel[] = opts.splatter === 'graded' ? [0, 1, 2, 3] : Array.isArray(opts.splatter) ? opts.splatter : [(opts.splatter ?? 0) as SplatterLevel];
    const level = cycle[i % cycle.length]!;
    const spec = sampleScene(rng, level);
    const name = `scene_${String(i).padStart(5, '0')}`;
    const rgb = renderScene(spec, size, size);
    await sharp(rgb, { raw: { width: size, height: size, channels: 3 } }).png().toFile(join(dir, `${name}.png`));
    writeFileSync(join(dir, `${name}.txt`), `${captionOf(spec, { intensityTag: opts.intensityTags ?? false, describeSplatter: opts.describeSplatter ?? true })}\n`);
    specs.push(spec);
    opts.onProgress?.(i + 1, opts.count);
  }
  return specs;
}
