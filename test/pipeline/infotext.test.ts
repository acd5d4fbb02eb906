import { describe, expect, it } from 'vitest';
import {
  a1111Sampler, formatInfotext, formatLoraHashes, generationInfotext,
  parseInfotext, parseLoraHashes, quoteInfotextValue, samplerFromInfotext, unquoteInfotextValue,
} from '../../src/pipeline/infotext.ts';

// Literal infotexts as A1111 wrote them; neither comes from this code.
// 1. The example in the docstring of parse_generation_parameters (modules/infotext_utils.py).
const A1111_DOCSTRING = `girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, heavy makeup, by Alphonse Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), detailed, intricate
Negative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, disfigured, poorly drawn face, mutation, mutated, (extra_limb), (ugly), (poorly drawn hands), messy drawing
Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b`;
// 2. The 'parameters' chunk of an image saved by A1111 v1.9.4, quoted in a public extension's source.
const A1111_V194 = '1girl,A superstar on stage.,, <lora:LCM_15:1>, <lora:ip-adapter-faceid-plusv2_sd15_lora:1>\n' +
  'Negative prompt: MajicNegative_V2,badhandv4,\n' +
  'Steps: 6, Sampler: LCM, Schedule type: Automatic, CFG scale: 1.5, Seed: 3748719078, Size: 768x1024, ' +
  'Model hash: 19bbe9faa4, Model: fantasticmix_k2, VAE hash: 07af11b95c, VAE: vae-ft-mse-840000-ema-pruned.safetensors, ' +
  'Clip skip: 2, Lora hashes: "LCM_15: aaebf6360f7d, ip-adapter-faceid-plusv2_sd15_lora: a95a0f4bdcb9", ' +
  'TI hashes: "MajicNegative_V2: a53884ef726b, badhandv4: 5e40d722fc3d", Downcast alphas_cumprod: True, Version: v1.9.4';

describe('parseInfotext on infotexts A1111 wrote', () => {
  it('reads the docstring example', () => {
    const r = parseInfotext(A1111_DOCSTRING);
    expect(r.prompt).toBe(A1111_DOCSTRING.split('\n')[0]);
    expect(r.negativePrompt).toBe(A1111_DOCSTRING.split('\n')[1]!.slice('Negative prompt: '.length));
    expect(r.params).toEqual({
      Steps: '20', Sampler: 'Euler a', 'CFG scale': '7', Seed: '965400086', 'Size-1': '512', 'Size-2': '512', 'Model hash': '45dee52b',
    });
  });

  it('reads the v1.9.4 example, quoted values decoded', () => {
    const r = parseInfotext(A1111_V194);
    expect(r.prompt).toBe('1girl,A superstar on stage.,, <lora:LCM_15:1>, <lora:ip-adapter-faceid-plusv2_sd15_lora:1>');
    expect(r.negativePrompt).toBe('MajicNegative_V2,badhandv4,');
    expect(r.params['Lora hashes']).toBe('LCM_15: aaebf6360f7d, ip-adapter-faceid-plusv2_sd15_lora: a95a0f4bdcb9');
    expect(r.params['TI hashes']).toBe('MajicNegative_V2: a53884ef726b, badhandv4: 5e40d722fc3d');
    expect(r.params['Schedule type']).toBe('Automatic');
    expect(r.params['Clip skip']).toBe('2');
    expect(r.params['Downcast alphas_cumprod']).toBe('True');
    expect(r.params['Version']).toBe('v1.9.4');
    expect([r.params['Size-1'], r.params['Size-2']]).toEqual(['768', '1024']);
    expect(Object.keys(r.params)).toHaveLength(16);
    expect(parseLoraHashes(r.params['Lora hashes']!)).toEqual([
      { name: 'LCM_15', hash: 'aaebf6360f7d' },
      { name: 'ip-adapter-faceid-plusv2_sd15_lora', hash: 'a95a0f4bdcb9' },
    ]);
  });
});

describe('generationInfotext writes what A1111 writes', () => {
  it('reproduces the v1.9.4 infotext byte for byte from its fields', () => {
    const text = generationInfotext({
      prompt: '1girl,A superstar on stage.,, <lora:LCM_15:1>, <lora:ip-adapter-faceid-plusv2_sd15_lora:1>',
      negativePrompt: 'MajicNegative_V2,badhandv4,',
      steps: 6, sampler: 'LCM', cfgScale: 1.5, seed: 3748719078, width: 768, height: 1024,
      modelHash: '19bbe9faa4', model: 'fantasticmix_k2',
      vaeHash: '07af11b95c', vae: 'vae-ft-mse-840000-ema-pruned.safetensors',
      clipSkip: 2,
      loras: [{ name: 'LCM_15', hash: 'aaebf6360f7d' }, { name: 'ip-adapter-faceid-plusv2_sd15_lora', hash: 'a95a0f4bdcb9' }],
      extra: [['TI hashes', 'MajicNegative_V2: a53884ef726b, badhandv4: 5e40d722fc3d'], ['Downcast alphas_cumprod', true]],
      version: 'v1.9.4',
    });
    expect(text).toBe(A1111_V194);
  });

  it('reproduces the docstring example with the pre-1.9 field set', () => {
    const [prompt, negativeLine] = A1111_DOCSTRING.split('\n') as [string, string];
    const text = formatInfotext(prompt, negativeLine.slice('Negative prompt: '.length), [
      ['Steps', 20], ['Sampler', 'Euler a'], ['CFG scale', 7], ['Seed', 965400086], ['Size', '512x512'], ['Model hash', '45dee52b'],
    ]);
    expect(text).toBe(A1111_DOCSTRING);
  });

  it('img2img: denoising strength after the model, clip skip 1 and GPU rng left out, CPU rng written', () => {
    const text = generationInfotext({
      prompt: 'a lighthouse at dusk', negativePrompt: '', steps: 20, sampler: 'Euler a', cfgScale: 7, seed: 1,
      width: 512, height: 768, modelHash: '6ce0161689', model: 'v1-5-pruned-emaonly', denoisingStrength: 0.6,
      clipSkip: 1, rng: 'cpu', loras: [{ name: 'ink:style,v2', hash: '0123456789ab' }], version: 'redline-0.1.0',
    });
    expect(text).toBe('a lighthouse at dusk\n' +
      'Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 1, Size: 512x768, ' +
      'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.6, RNG: CPU, ' +
      'Lora hashes: "inkstylev2: 0123456789ab", Version: redline-0.1.0');
  });

  it('DPM++ 2M Karras is written as A1111 1.9+ writes it and read back', () => {
    expect(a1111Sampler('DPM++ 2M Karras')).toEqual({ sampler: 'DPM++ 2M', scheduleType: 'Karras' });
    expect(a1111Sampler('Euler a')).toEqual({ sampler: 'Euler a', scheduleType: 'Automatic' });
    expect(samplerFromInfotext({ Sampler: 'DPM++ 2M', 'Schedule type': 'Karras' })).toBe('DPM++ 2M Karras');
    expect(samplerFromInfotext({ Sampler: 'DPM++ 2M Karras' })).toBe('DPM++ 2M Karras');
    expect(samplerFromInfotext({ Sampler: 'Euler a', 'Schedule type': 'Automatic' })).toBe('Euler a');
  });
});

describe('A1111 quote() rules', () => {
  it('plain values stay bare', () => {
    expect(quoteInfotextValue('Euler a')).toBe('Euler a');
    expect(quoteInfotextValue(7)).toBe('7');
    expect(quoteInfotextValue(7.5)).toBe('7.5');
    expect(quoteInfotextValue(true)).toBe('True');
    expect(quoteInfotextValue('say "hi"')).toBe('say "hi"');
  });
  it('a comma, colon or newline makes a JSON string', () => {
    expect(quoteInfotextValue('a, b')).toBe('"a, b"');
    expect(quoteInfotextValue('a: b')).toBe('"a: b"');
    expect(quoteInfotextValue('a\nb')).toBe('"a\\nb"');
    expect(quoteInfotextValue('say "hi", then: \\')).toBe('"say \\"hi\\", then: \\\\"');
    expect(quoteInfotextValue('café, ü')).toBe('"café, ü"');
  });
  it('floats print as Python prints them', () => {
    expect(quoteInfotextValue(0.00001)).toBe('1e-05');
    expect(quoteInfotextValue(0.0001)).toBe('0.0001');
    expect(quoteInfotextValue(1.5e16)).toBe('1.5e+16');
    expect(quoteInfotextValue(1 / 3)).toBe('0.3333333333333333');
  });
  it('unquote decodes JSON strings and leaves broken ones', () => {
    expect(unquoteInfotextValue('"a, \\"b\\""')).toBe('a, "b"');
    expect(unquoteInfotextValue('"broken \\x"')).toBe('"broken \\x"');
    expect(unquoteInfotextValue('bare')).toBe('bare');
  });
  it('a value equal to its key is written as the key alone', () => {
    expect(formatInfotext('p', '', [['Steps', 1], ['Sampler', 'x'], ['Seed', 2], ['Tiled', 'Tiled']])).toBe('p\nSteps: 1, Sampler: x, Seed: 2, Tiled');
  });
});

describe('parseInfotext edge rules of parse_generation_parameters', () => {
  it('a last line with fewer than 3 pairs is prompt text', () => {
    const r = parseInfotext('a cat\nstyle: ink, mood: calm');
    expect(r.prompt).toBe('a cat\nstyle: ink, mood: calm');
    expect(r.params).toEqual({});
  });
  it('multi-line prompt and negative prompt; lines are stripped', () => {
    const r = parseInfotext('  line one  \nline two\nNegative prompt:   neg one\nneg two \nSteps: 1, Sampler: Euler, Seed: 3');
    expect(r.prompt).toBe('line one\nline two');
    expect(r.negativePrompt).toBe('neg one\nneg two');
    expect(r.params).toEqual({ Steps: '1', Sampler: 'Euler', Seed: '3' });
  });
  it('an empty value is skipped, as A1111 does', () => {
    expect(parseInfotext('p\nSteps: 1, Model: , Seed: 2, Sampler: x').params).toEqual({ Steps: '1', Seed: '2', Sampler: 'x' });
  });
  it('no negative line means an empty negative prompt', () => {
    expect(parseInfotext('p\nSteps: 1, Seed: 2, Sampler: x').negativePrompt).toBe('');
  });
});

describe('round trips', () => {
  const cases: Array<[string, string, Array<[string, string]>]> = [
    ['a (red:1.2) fox, [snow]\nsecond line', 'blurry, lowres', [['Steps', '30'], ['Sampler', 'DPM++ 2M'], ['Seed', '42']]],
    ['prompt with "quotes" and a: colon', '', [['Steps', '1'], ['Model', 'my, model'], ['Note', 'x: "y", z\nw'], ['Seed', '9']]],
    ['日本語のプロンプト, <lora:ink:0.8>', '低品質', [['Steps', '8'], ['Lora hashes', 'ink: 0123456789ab'], ['Version', 'v1.10.1']]],
  ];
  for (const [prompt, negative, params] of cases) {
    it(`format then parse keeps everything: ${JSON.stringify(prompt).slice(0, 30)}`, () => {
      const r = parseInfotext(formatInfotext(prompt, negative, params));
      expect(r.prompt).toBe(prompt);
      expect(r.negativePrompt).toBe(negative);
      expect(r.params).toEqual(Object.fromEntries(params));
    });
  }
  it('Lora hashes survive a round trip', () => {
    const loras = [{ name: 'a', hash: '111111111111' }, { name: 'b_v2', hash: '222222222222' }];
    expect(parseLoraHashes(formatLoraHashes(loras))).toEqual(loras);
  });
});
