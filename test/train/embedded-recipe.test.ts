// The embedded model's recipe is reproducible: scripts/train-embedded.ts run twice on the same
// recipe (the committed architecture, a small data set and few steps so the test stays short)
// writes byte-identical weights, and the folder it writes loads and generates as a model.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Generator } from '../../src/pipeline/generate.ts';
import { StableDiffusionModel } from '../../src/pipeline/model.ts';
import { readRecipe } from '../../scripts/embedded-recipe.ts';
import { repoRoot } from '../helpers/golden.ts';

const root = mkdtempSync(join(tmpdir(), 'redline-recipe-'));
const recipeDir = join(root, 'recipe');
const components = ['unet', 'vae', 'text_encoder'];

function train(name: string): string {
  const out = join(root, name, 'model');
  execFileSync(process.execPath, ['--import', 'tsx', join(repoRoot, 'scripts', 'train-embedded.ts'), '--recipe', recipeDir, '--work', join(root, name, 'work'), '--out', out], {
    cwd: repoRoot,
    stdio: 'pipe',
  });
  return out;
}

beforeAll(() => {
  mkdirSync(recipeDir, { recursive: true });
  copyFileSync(join(repoRoot, 'recipes', 'redline-tiny', 'model.json'), join(recipeDir, 'model.json'));
  const { recipe } = readRecipe(join(repoRoot, 'recipes', 'redline-tiny'));
  const small = {
    ...recipe,
    dataset: { ...recipe.dataset, count: 24 },
    heldOut: { ...recipe.heldOut, count: 4 },
    vae: { ...recipe.vae, steps: 3, batch: 2, warmup: 1 },
    diffusion: { ...recipe.diffusion, steps: 3, batch: 2, warmup: 1 },
  };
  writeFileSync(join(recipeDir, 'train.json'), JSON.stringify(small));
});

afterAll(() => rmSync(root, { recursive: true, force: true }));

describe('the embedded model recipe', () => {
  it('gives byte-identical weights when run twice, and a model that generates', async () => {
    const a = train('a');
    const b = train('b');
    for (const c of components) {
      const file = c === 'text_encoder' ? 'model.safetensors' : 'diffusion_pytorch_model.safetensors';
      const x = readFileSync(join(a, c, file));
      const y = readFileSync(join(b, c, file));
      expect(x.length, c).toBeGreaterThan(1000);
      expect(x.equals(y), `${c} weights differ between two runs of the same recipe`).toBe(true);
    }
    const model = await StableDiffusionModel.load(a);
    try {
      const [img] = await new Generator(model).generate({ prompt: 'a large red circle in the center, blue background', seed: 1, steps: 2, width: 128, height: 128 });
      expect(img!.image.width).toBe(128);
      expect(new Set(img!.image.data).size).toBeGreaterThan(1);
    } finally {
      await model.release();
    }
  }, 300_000);
});
