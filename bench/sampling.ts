// Sampler arithmetic per step on a 1x4x64x64 latent (512x512 image) with CFG folded in,
// excluding the UNet, for every sampler; and randn throughput of both torch generators.
// Run: npx tsx bench/sampling.ts [--steps N] [--batch B] [--seconds S]
import { parseArgs } from 'node:util';
import { create, SAMPLER_NAMES } from '../src/sampling/index.ts';
import { createGenerator, ImageRng } from '../src/sampling/rng/index.ts';

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '20' },
    batch: { type: 'string', default: '1' },
    seconds: { type: 'string', default: '1' },
  },
});
const steps = Number(values.steps);
const batch = Number(values.batch);
const seconds = Number(values.seconds);
const perImage = 4 * 64 * 64;
const n = perImage * batch;

/** Mean milliseconds per sampler step over whole runs repeated for about `seconds`. */
function samplerStepMs(name: string): number {
  const uncond = new Float32Array(n).map((_, k) => Math.sin(k) * 0.5);
  const cond = new Float32Array(n).map((_, k) => Math.cos(k) * 0.5);
  const eps = new Float32Array(n);
  const g = 7.5;
  let stepsDone = 0;
  let elapsed = 0;
  let warm = false;
  while (elapsed < seconds * 1000) {
    const sampler = create(name, { steps });
    const rng = new ImageRng({ seeds: Array.from({ length: batch }, (_, i) => 1234 + i), shape: [4, 64, 64] });
    const x = rng.next();
    for (let k = 0; k < n; k++) x[k]! *= sampler.initNoiseSigma;
    const start = performance.now();
    for (let i = 0; i < sampler.timesteps.length; i++) {
      sampler.scaleModelInput(x, i);
      for (let k = 0; k < n; k++) eps[k] = uncond[k]! + g * (cond[k]! - uncond[k]!);
      sampler.step(eps, i, x, rng);
      stepsDone++;
    }
    // The first run compiles the hot loops; it is not counted.
    if (warm) elapsed += performance.now() - start;
    else stepsDone = 0;
    warm = true;
  }
  return elapsed / stepsDone;
}

function randnRate(source: 'cpu' | 'gpu'): number {
  const g = createGenerator(42, source);
  const out = new Float32Array(perImage);
  for (let w = 0; w < 3; w++) g.randnInto(out);
  let values = 0;
  const start = performance.now();
  while (performance.now() - start < seconds * 1000) {
    g.randnInto(out);
    values += out.length;
  }
  return values / ((performance.now() - start) / 1000);
}

console.log(`sampler arithmetic per step, latent ${batch}x4x64x64, ${steps} steps, CFG combine included (UNet excluded)`);
for (const name of SAMPLER_NAMES) {
  console.log(`  ${name.padEnd(16)} ${samplerStepMs(name).toFixed(3)} ms/step`);
}
for (const source of ['cpu', 'gpu'] as const) {
  const r = randnRate(source);
  console.log(`randn ${source} generator: ${(r / 1e6).toFixed(2)} M values/s (${((perImage / r) * 1000).toFixed(2)} ms per 4x64x64 latent)`);
}
