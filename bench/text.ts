// Text front end on the CPU: tokenizer load, BPE throughput on unseen words (cache misses)
// and on typical prompts (cache hits), and A1111 chunking of weighted prompts.
// Run: npx tsx bench/text.ts [--tokenizer DIR] [--seconds S]
// DIR defaults to the golden set's tokenizer/ (SD 1.5's CLIP vocab.json + merges.txt).
import { parseArgs } from 'node:util';
import { loadTokenizer } from '../src/text/tokenizer.ts';
import { promptChunks } from '../src/text/conditioning.ts';
import { goldenPath } from '../test/helpers/golden.ts';

const { values } = parseArgs({
  options: { tokenizer: { type: 'string' }, seconds: { type: 'string', default: '1.5' } },
});
const dir = values.tokenizer ?? goldenPath('tokenizer');
const seconds = Number(values.seconds);

/** Runs `fn` repeatedly for about `seconds` and returns calls per second. */
function rate(fn: (i: number) => number): { perSecond: number; unitsPerSecond: number } {
  let calls = 0;
  let units = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  while (performance.now() < end) {
    for (let k = 0; k < 50; k++) units += fn(calls++);
  }
  const elapsed = (performance.now() - start) / 1000;
  return { perSecond: calls / elapsed, unitsPerSecond: units / elapsed };
}

// Deterministic pseudo-random words so every BPE call is a cache miss.
let state = 12345;
const nextRandom = () => (state = (state * 1103515245 + 12345) >>> 0) / 2 ** 32;
const letters = 'abcdefghijklmnopqrstuvwxyz';
const randomWord = () => Array.from({ length: 4 + Math.floor(nextRandom() * 8) }, () => letters[Math.floor(nextRandom() * 26)]).join('');

const prompts = [
  'a photograph of an astronaut riding a horse',
  'cyberpunk city street at night, neon lights, rain, highly detailed, 4k, trending on artstation',
  '(masterpiece:1.2), best quality, (detailed eyes:1.1), a lighthouse on a cliff, golden hour, [blurry]',
  'ultra detailed intricate ornate baroque cathedral interior with stained glass windows, volumetric god rays, ' +
    'dust particles floating in the air, marble columns, gilded ornaments, wide angle, soft lighting, sharp focus, ' +
    'oil painting by a renaissance master, museum quality, dramatic composition BREAK warm palette, film grain',
];

let t0 = performance.now();
const tokenizer = loadTokenizer(dir);
const loadMs = performance.now() - t0;
console.log(`tokenizer load (vocab.json + merges.txt, ${tokenizer.vocab.size} tokens): ${loadMs.toFixed(0)} ms`);

const cold = rate(() => {
  const text = `${randomWord()} ${randomWord()} ${randomWord()} ${randomWord()}`;
  return tokenizer.tokenize(text).length;
});
console.log(`BPE, unseen words (cache misses): ${(cold.perSecond * 4).toFixed(0)} words/s, ${cold.unitsPerSecond.toFixed(0)} tokens/s`);

const warm = rate((i) => tokenizer.encodePadded(prompts[i % prompts.length]!).length);
console.log(`encodePadded, typical prompts (cached words): ${warm.perSecond.toFixed(0)} prompts/s`);

t0 = performance.now();
const chunked = rate((i) => promptChunks(tokenizer, prompts[i % prompts.length]!).chunks);
console.log(`promptChunks (A1111 parse + chunking + weights): ${chunked.perSecond.toFixed(0)} prompts/s ` +
  `(${(1000 / chunked.perSecond).toFixed(3)} ms per prompt)`);
