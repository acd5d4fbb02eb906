// Output-check chain on the CPU: model load time, then added latency per 512x512 image
// (nsfwjs + face detect/age/embedding + likeness match + decision; blur when chosen).
// Target (issue 6): output checks + provenance together under 300 ms per image.
// Run: npx tsx bench/output-checks.ts [--iterations N] [--sd-safety-checker safety_checker/model.safetensors]
import { parseArgs } from 'node:util';
import { ImageSafetyChecks } from '../src/safety/output/checks.ts';
import { FaceAnalyzer } from '../src/safety/output/faces.ts';
import type { RgbImage } from '../src/safety/output/image.ts';
import { NsfwClassifier } from '../src/safety/output/nsfw.ts';
import { SdSafetyChecker } from '../src/safety/output/sd-safety-checker.ts';
import { gradient, PERSON_A, PERSON_B, renderFace } from '../test/safety/output/synthetic.ts';
import { formatTimes, timeRuns } from './_timing.ts';

const { values } = parseArgs({ options: { iterations: { type: 'string', default: '20' }, 'sd-safety-checker': { type: 'string' } } });
const iterations = Number(values.iterations);

const time = async (fn: () => Promise<unknown>) => `${formatTimes(await timeRuns(fn, iterations))}  (${iterations} runs)`;

const t0 = performance.now();
// A registered person, so the likeness comparison runs as it would in a deployment.
const gallery = [{ name: 'bench', embedding: new Float32Array(1024).map((_, i) => ((i * 7919) % 13) / 13) }];
const checks = await ImageSafetyChecks.load({ likeness: () => gallery });
console.log(`model load (tfjs wasm + human face models + nsfwjs MobileNetV2 + warm-up): ${(performance.now() - t0).toFixed(0)} ms`);

const cases: [string, RgbImage, ImageSafetyChecks][] = [
  ['no face (gradient)', gradient(512, 512), checks],
  ['one face (code-drawn)', await renderFace(PERSON_A), checks],
  ['one face, other person', await renderFace(PERSON_B), checks],
  ['blur path (threshold 0)', gradient(512, 512), checks.withOptions({ nsfw: { thresholds: { porn: 0 }, action: 'blur' } })],
];
// One pass over every case first, so no case pays for JIT and kernel warm-up of the others.
for (const [, image, c] of cases) await c.checkOutput(image, { intensity: 1 });
for (const [name, image, c] of cases) {
  console.log(`${name.padEnd(26)} 512x512  ${await time(() => c.checkOutput(image, { intensity: 1 }))}`);
}

// Where the time goes: each model on its own (separate instances on the same engine).
const nsfw = await NsfwClassifier.load();
const faces = await FaceAnalyzer.load();
const face = await renderFace(PERSON_A);
const stages: [string, () => Promise<unknown>][] = [
  ['nsfwjs classify', () => nsfw.classify(face)],
  ['faces, one face', () => faces.analyze(face)],
  ['faces, no face', () => faces.analyze(cases[0]![1])],
];
for (const [name, fn] of stages) console.log(`  stage ${name.padEnd(20)} ${await time(fn)}`);

const sdWeights = values['sd-safety-checker'];
if (sdWeights) {
  const t = performance.now();
  const sd = await SdSafetyChecker.load(sdWeights);
  console.log(`SD safety checker load (graph build + ORT session): ${(performance.now() - t).toFixed(0)} ms`);
  console.log(`  stage ${'sd safety checker'.padEnd(20)} ${await time(() => sd.check(face))}`);
} else {
  console.log('(diffusers safety checker not measured: pass --sd-safety-checker PATH to its model.safetensors)');
}
