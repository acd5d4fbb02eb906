// Trains the "splatter" demo adapter on the embedded model and installs it in models/Lora:
//   1. draws the dataset from recipes/splatter/data.json (procedural scenes, graded splatter,
//      intensity:N tags, captions that do not name the splatter),
//   2. runs `redline train recipes/splatter/splatter.toml` (LoRA + calibration sidecar),
//   3. copies splatter.safetensors and splatter.json into models/Lora.
//   npm run train:splatter [-- --out models/Lora]
import { copyFileSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { run as trainCommand } from '../src/cli/commands/train.ts';
import { ProgressBar } from '../src/cli/progress.ts';
import { loadTrainConfig } from '../src/train/data/config.ts';
import { writeSceneDataset } from '../src/train/procedural/dataset.ts';
import type { SplatterLevel } from '../src/train/procedural/scenes.ts';

const { values } = parseArgs({ options: { recipe: { type: 'string', default: 'recipes/splatter' }, out: { type: 'string', default: 'models/Lora' } } });
const recipeDir = resolve(values.recipe!);
const configPath = join(recipeDir, 'splatter.toml');
const data = JSON.parse(readFileSync(join(recipeDir, 'data.json'), 'utf8')) as { count: number; seed: number; size: number; levels: SplatterLevel[] };
const cfg = loadTrainConfig(configPath);
const imageDir = cfg.datasets[0]!.subsets[0]!.imageDir;

rmSync(imageDir, { recursive: true, force: true });
const bar = new ProgressBar('dataset', data.count);
await writeSceneDataset(imageDir, { count: data.count, seed: data.seed, size: data.size, splatter: data.levels, intensityTags: true, describeSplatter: false, onProgress: (d) => bar.update(d) });
bar.finish();

const code = await trainCommand([configPath]);
if (code) process.exit(code);

const out = resolve(values.out!);
mkdirSync(out, { recursive: true });
for (const f of ['splatter.safetensors', 'splatter.json']) copyFileSync(join(cfg.outputDir, f), join(out, f));
console.error(`installed ${join(out, 'splatter.safetensors')} and its sidecar (from ${dirname(configPath)})`);
