// Evaluates the embedded model (models/redline-tiny) on held-out captions of its recipe:
// generates one image per caption and checks with the scene generator's own rules
// (analyzeScene) whether the main object's colour, shape and position match the caption.
// With the demo adapter (--adapter, default models/Lora/splatter.safetensors), also measures
// red-splatter coverage at intensity 0..3 and can write the README's grid (--grid FILE).
//   npm run eval:demo -- [--model DIR] [--count N] [--steps N] [--out DIR] [--grid FILE]
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Generator } from '../src/pipeline/generate.ts';
import { readSidecar } from '../src/adapters/registry.ts';
import { encodePng, type RgbImage } from '../src/pipeline/image.ts';
import { StableDiffusionModel } from '../src/pipeline/model.ts';
import { COLOR_NAMES } from '../src/train/procedural/palette.ts';
import { analyzeScene, captionOf, POSITIONS, SHAPES } from '../src/train/procedural/scenes.ts';
import { heldOutScenes, readRecipe } from './embedded-recipe.ts';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'models/redline-tiny' },
    recipe: { type: 'string', default: 'recipes/redline-tiny' },
    count: { type: 'string', default: '40' },
    steps: { type: 'string', default: '20' },
    cfg: { type: 'string', default: '7' },
    out: { type: 'string' },
    adapter: { type: 'string', default: 'models/Lora/splatter.safetensors' },
    'splatter-count': { type: 'string', default: '8' },
    grid: { type: 'string' },
    json: { type: 'boolean', default: false },
  },
});

export interface CaptionResult {
  caption: string;
  seed: number;
  color: boolean;
  shape: boolean;
  position: boolean;
  seen: { color: string | null; shape: string | null; position: string | null };
}

const { recipe } = readRecipe(values.recipe!);
const size = recipe.dataset.size;
const scenes = heldOutScenes(recipe).slice(0, Number(values.count));
const model = await StableDiffusionModel.load(values.model!);
const gen = new Generator(model);
if (values.out) mkdirSync(values.out, { recursive: true });
const results: CaptionResult[] = [];
const t0 = performance.now();
for (const [i, spec] of scenes.entries()) {
  const caption = captionOf(spec);
  const seed = 1000 + i;
  const [img] = await gen.generate({ prompt: caption, seed, steps: Number(values.steps), cfgScale: Number(values.cfg), width: size, height: size, sampler: 'Euler a' });
  const a = analyzeScene(img!.image.data, size, size);
  results.push({
    caption,
    seed,
    color: a.color === spec.color,
    shape: a.shape === spec.shape,
    position: a.position === spec.position,
    seen: { color: a.color, shape: a.shape, position: a.position },
  });
  if (values.out) writeFileSync(join(values.out, `${String(i).padStart(3, '0')}.png`), await encodePng(img!.image));
}
const seconds = (performance.now() - t0) / 1000;
const rate = (k: 'color' | 'shape' | 'position'): number => results.filter((r) => r[k]).length / results.length;
const objectColors = COLOR_NAMES.filter((c) => c !== 'brown' && c !== 'gray').length;
const summary = {
  model: values.model,
  captions: results.length,
  steps: Number(values.steps),
  secondsPerImage: seconds / results.length,
  color: rate('color'),
  shape: rate('shape'),
  position: rate('position'),
  chance: { color: 1 / objectColors, shape: 1 / SHAPES.length, position: 1 / POSITIONS.length },
  splatter: null as null | Array<{ intensity: number; strength: number; coverage: number }>,
};
// The demo adapter at each intensity level, at the strength its calibration sidecar gives
// that level (as the service applies graded adapters), on the first held-out captions.
const adapter = values.adapter!;
const grid: RgbImage[][] = [];
if (existsSync(adapter)) {
  const { sidecar, problems } = readSidecar(adapter);
  if (!sidecar?.intensity) throw new Error(`${adapter} has no intensity calibration in its sidecar: ${problems.join('; ')}`);
  summary.splatter = [];
  const n = Math.min(Number(values['splatter-count']), scenes.length);
  for (let i = 0; i < n; i++) grid.push([]);
  for (let level = 0; level <= 3; level++) {
    const strength = sidecar.intensity[String(level)] ?? 0;
    let coverage = 0;
    for (let i = 0; i < n; i++) {
      const adapters = strength > 0 ? [{ path: adapter, te: strength, unet: strength }] : [];
      const [img] = await gen.generate({ prompt: captionOf(scenes[i]!), seed: 2000 + i, steps: Number(values.steps), cfgScale: Number(values.cfg), width: size, height: size, sampler: 'Euler a', adapters });
      coverage += analyzeScene(img!.image.data, size, size).splatterCoverage / n;
      grid[i]!.push(img!.image);
    }
    summary.splatter.push({ intensity: level, strength, coverage });
  }
}
if (values.grid && grid.length) {
  writeFileSync(values.grid, await encodePng(tileImages(grid)));
  console.error(`wrote ${values.grid} (rows: held-out captions, columns: intensity 0-3)`);
}
await model.release();
if (values.json) console.log(JSON.stringify({ summary, results }, null, 2));
else {
  for (const r of results) console.log(`${r.color ? 'C' : '-'}${r.shape ? 'S' : '-'}${r.position ? 'P' : '-'}  ${r.caption}  -> ${r.seen.color ?? '?'} ${r.seen.shape ?? '?'} ${r.seen.position ?? '?'}`);
  console.log(JSON.stringify(summary, null, 2));
}

/** Rows of equally sized images tiled into one image with a 2-pixel white gutter. */
function tileImages(rows: RgbImage[][]): RgbImage {
  const w = rows[0]![0]!.width;
  const h = rows[0]![0]!.height;
  const cols = Math.max(...rows.map((r) => r.length));
  const gap = 2;
  const W = cols * w + (cols - 1) * gap;
  const H = rows.length * h + (rows.length - 1) * gap;
  const data = new Uint8Array(W * H * 3).fill(255);
  rows.forEach((row, r) => row.forEach((img, c) => {
    for (let y = 0; y < h; y++) data.set(img.data.subarray(y * w * 3, (y + 1) * w * 3), ((r * (h + gap) + y) * W + c * (w + gap)) * 3);
  }));
  return { width: W, height: H, data };
}
