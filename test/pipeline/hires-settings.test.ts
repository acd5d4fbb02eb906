// Hires fix settings and infotext, worked out by hand from A1111's rules
// (modules/processing.py StableDiffusionProcessingTxt2Img.calculate_target_resolution and
// init(), sd_samplers_common.setup_img2img_steps, create_infotext).
import { describe, expect, it } from 'vitest';
import { resolveRequest } from '../../src/pipeline/generate.ts';
import { HIRES_UPSCALERS, hiresInfotext, hiresStrength, resolveHires } from '../../src/pipeline/hires.ts';
import { generationInfotext, parseInfotext } from '../../src/pipeline/infotext.ts';
import { create as createSampler } from '../../src/sampling/index.ts';
import { promptSchedule } from '../../src/text/prompt-schedule.ts';
import { refusalOf } from '../helpers/errors.ts';

const first = (width: number, height: number, steps = 20) => ({ width, height, steps });

describe('hires target size', () => {
  it('hr_scale: int(side * scale)', () => {
    const hr = resolveHires({ scale: 1.5 }, first(512, 768), 2048);
    expect([hr.upscaleWidth, hr.upscaleHeight, hr.width, hr.height, hr.truncateX, hr.truncateY]).toEqual([768, 1152, 768, 1152, 0, 0]);
  });

  it('one resize side given: the other follows the aspect ratio (integer division)', () => {
    // 1024 * 768 // 512 = 1536; 1200 * 512 // 768 = 800
    expect(resolveHires({ resizeX: 1024 }, first(512, 768), 2048)).toMatchObject({ width: 1024, height: 1536 });
    expect(resolveHires({ resizeY: 1200 }, first(512, 768), 2048)).toMatchObject({ width: 800, height: 1200 });
  });

  it('both resize sides: cover the box keeping the aspect, then crop the latents centred', () => {
    // 512/768 < 1024/1024: upscale to 1024 x (1024*768//512 = 1536), truncate_y = (1536-1024)//8 = 64
    expect(resolveHires({ resizeX: 1024, resizeY: 1024 }, first(512, 768), 2048)).toMatchObject({
      upscaleWidth: 1024, upscaleHeight: 1536, truncateX: 0, truncateY: 64, width: 1024, height: 1024,
    });
    // 768/512 >= 1024/1024: upscale to (1024*768//512 = 1536) x 1024, truncate_x = 64
    expect(resolveHires({ resizeX: 1024, resizeY: 1024 }, first(768, 512), 2048)).toMatchObject({
      upscaleWidth: 1536, upscaleHeight: 1024, truncateX: 64, truncateY: 0, width: 1024, height: 1024,
    });
  });

  it('a target that is not a multiple of 8 is refused, naming the size', () => {
    // int(512 * 1.3) = 665
    const e = refusalOf(() => resolveHires({ scale: 1.3 }, first(512, 512), 2048));
    expect(e.code).toBe('bad_hires_size');
    expect(e.message).toContain('665x665');
    expect(refusalOf(() => resolveHires({ resizeX: 1000, resizeY: 1000 }, first(512, 768), 2048)).message).toContain('1000x1500');
  });

  it('a target over the size limit is refused', () => {
    expect(refusalOf(() => resolveHires({ scale: 4 }, first(768, 768), 2048)).message).toContain('3072x3072');
  });

  it('unknown upscalers are refused with the list of valid ones', () => {
    const e = refusalOf(() => resolveHires({ upscaler: 'R-ESRGAN 4x+' }, first(512, 512), 2048));
    expect(e.code).toBe('unknown_upscaler');
    for (const name of ['Latent', 'Latent (antialiased)', 'Latent (bicubic)', 'Latent (bicubic antialiased)', 'Latent (nearest)', 'Latent (nearest-exact)', 'None', 'Lanczos', 'Nearest']) {
      expect(HIRES_UPSCALERS).toContain(name);
      expect(e.hint).toContain(name);
    }
  });

  it('denoising strength outside (0, 1] is refused', () => {
    expect(refusalOf(() => resolveHires({ denoise: 0 }, first(512, 512), 2048)).code).toBe('bad_hires');
    expect(refusalOf(() => resolveHires({ denoise: 1.2 }, first(512, 512), 2048)).code).toBe('bad_hires');
  });

  it('the hires fix is txt2img only', () => {
    const initImage = { width: 64, height: 64, data: new Uint8Array(64 * 64 * 3) };
    expect(refusalOf(() => resolveRequest({ prompt: 'x', width: 64, height: 64, initImage, hires: {} })).message).toContain('txt2img');
  });
});

describe('hires steps: explicit steps on a schedule of int(steps / min(denoise, 0.999))', () => {
  it.each([
    // [first-pass steps, hr_second_pass_steps, denoise, steps run, schedule length]
    [20, 0, 0.7, 20, 28], // 20 / 0.7 = 28.57
    [20, 10, 0.5, 10, 20],
    [30, 7, 0.3, 7, 23], // 7 / 0.3 = 23.33
    [20, 0, 1, 20, 20], // 20 / 0.999 = 20.02
    [4, 3, 0.6, 3, 5],
  ])('%i steps, hires steps %i, denoise %f: runs %i of %i', (steps, hrSteps, denoise, runs, schedule) => {
    const hr = resolveHires({ steps: hrSteps, denoise }, first(512, 512, steps), 2048);
    expect([hr.steps, hr.scheduleSteps]).toEqual([runs, schedule]);
    for (const sampler of ['Euler', 'DDIM', 'DPM++ 2M Karras']) {
      const s = createSampler(sampler, { steps: hr.scheduleSteps, strength: hiresStrength(hr) });
      expect(s.timesteps.length).toBe(runs);
    }
  });
});

describe('hires infotext, in A1111\'s order', () => {
  const base = {
    prompt: 'a lighthouse at dusk',
    negativePrompt: 'fog',
    steps: 20,
    sampler: 'DPM++ 2M Karras',
    cfgScale: 7,
    seed: 42,
    width: 512,
    height: 512,
    modelHash: '6ce0161689',
    model: 'v1-5-pruned-emaonly',
    loras: [{ name: 'ink', hash: '0123456789ab' }],
    version: 'v1.10.1',
  };

  it('scale, steps and a named upscaler: Denoising strength before Clip skip, Hires fields before Lora hashes', () => {
    const hr = resolveHires({ scale: 2, steps: 10, upscaler: 'latent (bicubic antialiased)', denoise: 0.45 }, first(512, 512), 2048);
    expect(generationInfotext({ ...base, clipSkip: 2, ...hiresInfotext(hr, base) })).toBe(
      'a lighthouse at dusk\n' +
      'Negative prompt: fog\n' +
      'Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x512, ' +
      'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.45, Clip skip: 2, ' +
      'Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent (bicubic antialiased), ' +
      'Lora hashes: "ink: 0123456789ab", Version: v1.10.1',
    );
  });

  it('resize target, no second-pass steps, no upscaler named: "Hires resize" only', () => {
    const hr = resolveHires({ resizeX: 1024, resizeY: 0, denoise: 0.7 }, first(512, 768), 2048);
    const text = generationInfotext({ ...base, width: 512, height: 768, loras: [], ...hiresInfotext(hr, base) });
    expect(text).toBe(
      'a lighthouse at dusk\n' +
      'Negative prompt: fog\n' +
      'Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x768, ' +
      'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.7, Hires resize: 1024x0, Version: v1.10.1',
    );
    // A1111's reader splits WxH values into -1/-2 keys.
    expect(parseInfotext(text).params).toMatchObject({ 'Hires resize-1': '1024', 'Hires resize-2': '0', 'Denoising strength': '0.7', 'Size-1': '512', 'Size-2': '768' });
  });

  it('a fractional scale prints as Python prints it', () => {
    const hr = resolveHires({ scale: 1.5, upscaler: 'Nearest' }, first(512, 512), 2048);
    expect(generationInfotext({ ...base, loras: [], version: undefined, ...hiresInfotext(hr, base) })).toMatch(
      /, Denoising strength: 0\.7, Hires upscale: 1\.5, Hires upscaler: Nearest$/,
    );
  });
});

describe('prompt editing in the hires pass (A1111 hires_steps timeline)', () => {
  const g = (prompt: string) => promptSchedule(prompt, 10, 10).map((e) => [e.endAtStep, e.prompt]);
  it('A1111\'s doctests: get_learned_conditioning_prompt_schedules([p], 10, 10)', () => {
    expect(g('a [b:.5] c')).toEqual([[10, 'a b c']]);
    expect(g('a [b:1.5] c')).toEqual([[5, 'a  c'], [10, 'a b c']]);
  });
  it('an integer step counts on from the first pass: 15 of 10 + 10 is step 5 of the second pass', () => {
    expect(g('[cat:dog:15]')).toEqual([[5, 'cat'], [10, 'dog']]);
    expect(g('[cat:dog:7]')).toEqual([[10, 'dog']]);
  });
});

describe('hires prompts and sampler (A1111 hr_prompt, hr_negative_prompt, hr_sampler_name)', () => {
  const base = {
    prompt: 'a lighthouse at dusk, <lora:ink:0.5>',
    negativePrompt: 'fog',
    steps: 20,
    sampler: 'Euler a',
    cfgScale: 7,
    seed: 42,
    width: 512,
    height: 512,
    model: 'v1-5-pruned-emaonly',
    version: 'v1.10.1',
  };

  it('empty or null hires prompts and "Use same sampler" are the first pass\'s: nothing more is written', () => {
    for (const same of [{}, { prompt: '', negativePrompt: '', sampler: '' }, { prompt: null, negativePrompt: null, sampler: null }, { sampler: 'Use same sampler' }]) {
      const hr = resolveHires({ ...same, denoise: 0.5 }, first(512, 512), 2048);
      expect([hr.prompt, hr.negativePrompt, hr.sampler]).toEqual([null, null, null]);
      expect(generationInfotext({ ...base, ...hiresInfotext(hr, base) })).toBe(
        'a lighthouse at dusk, <lora:ink:0.5>\nNegative prompt: fog\n' +
        'Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 42, Size: 512x512, Model: v1-5-pruned-emaonly, ' +
        'Denoising strength: 0.5, Hires upscale: 2, Version: v1.10.1',
      );
    }
  });

  it('a hires prompt, negative prompt and sampler that differ: written before "Hires upscale", quoted when they hold a comma', () => {
    const hr = resolveHires({ prompt: 'a lighthouse at dusk, sharp, <lora:ink:0.5>', negativePrompt: 'fog: thick', sampler: 'DPM++ 2M', steps: 8, denoise: 0.4 }, first(512, 512), 2048);
    expect(hr.sampler).toBe('DPM++ 2M');
    expect(generationInfotext({ ...base, ...hiresInfotext(hr, base) })).toBe(
      'a lighthouse at dusk, <lora:ink:0.5>\nNegative prompt: fog\n' +
      'Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 42, Size: 512x512, Model: v1-5-pruned-emaonly, ' +
      'Denoising strength: 0.4, Hires sampler: DPM++ 2M, Hires prompt: "a lighthouse at dusk, sharp, <lora:ink:0.5>", ' +
      'Hires negative prompt: "fog: thick", Hires upscale: 2, Hires steps: 8, Version: v1.10.1',
    );
  });

  it('a hires prompt equal to the prompt, and a named sampler equal to the first pass\'s, are not written', () => {
    const hr = resolveHires({ prompt: base.prompt, negativePrompt: 'fog', sampler: 'euler a' }, first(512, 512), 2048);
    const text = generationInfotext({ ...base, ...hiresInfotext(hr, base) });
    expect(text).not.toMatch(/Hires (prompt|negative prompt|sampler)/);
  });

  it('DPM++ 2M Karras in the second pass after DPM++ 2M: "Hires schedule type: Karras"; after DPM++ 2M Karras: neither entry', () => {
    const karras = resolveHires({ sampler: 'DPM++ 2M Karras' }, first(512, 512), 2048);
    expect(generationInfotext({ ...base, sampler: 'DPM++ 2M', ...hiresInfotext(karras, { ...base, sampler: 'DPM++ 2M' }) })).toMatch(
      /Sampler: DPM\+\+ 2M, Schedule type: Automatic, .*Denoising strength: 0\.7, Hires schedule type: Karras, Hires upscale: 2, /,
    );
    const same = generationInfotext({ ...base, sampler: 'DPM++ 2M Karras', ...hiresInfotext(karras, { ...base, sampler: 'DPM++ 2M Karras' }) });
    expect(same).not.toMatch(/Hires (sampler|schedule type)/);
    // Euler a after DPM++ 2M Karras: a sampler that differs, on the model's own schedule (nothing for the schedule).
    const eulerA = resolveHires({ sampler: 'Euler a' }, first(512, 512), 2048);
    expect(generationInfotext({ ...base, sampler: 'DPM++ 2M Karras', ...hiresInfotext(eulerA, { ...base, sampler: 'DPM++ 2M Karras' }) })).toMatch(
      /Schedule type: Karras, .*Hires sampler: Euler a, Hires upscale: 2, Version/,
    );
  });

  it('an unknown hires sampler is refused, naming the valid ones', () => {
    const e = refusalOf(() => resolveHires({ sampler: 'DPM++ 3M SDE' }, first(512, 512), 2048));
    expect(e.code).toBe('unknown_sampler');
    expect(e.message).toContain('Hires sampler');
    expect(e.hint).toContain('DPM++ 2M Karras');
  });

  it('"Hires checkpoint" (the short title) comes first of the hires entries', () => {
    const hr = resolveHires({ sampler: 'DDIM' }, first(512, 512), 2048);
    const info = hiresInfotext(hr, base);
    expect(generationInfotext({ ...base, ...info, hires: { ...info.hires, checkpoint: 'v1-5-pruned-emaonly [6ce0161689]' } })).toMatch(
      /, Denoising strength: 0\.7, Hires checkpoint: v1-5-pruned-emaonly \[6ce0161689\], Hires sampler: DDIM, Hires upscale: 2, Version/,
    );
  });

  it('"Pad conds: True" comes after "Lora hashes"', () => {
    expect(generationInfotext({ ...base, loras: [{ name: 'ink', hash: '0123456789ab' }], padConds: true, extra: [['Intensity', 1]] })).toMatch(
      /, Lora hashes: "ink: 0123456789ab", Pad conds: True, Intensity: 1, Version: v1\.10\.1$/,
    );
  });

  it('the hires pass\'s <lora:> tags must be the prompt\'s: Redline keeps the first pass\'s adapters', () => {
    const req = { prompt: 'a cat <lora:ink:0.5>', negativePrompt: 'fog', width: 64, height: 64, steps: 4 };
    // Same tags (any order, other words): accepted, the tags taken out of the second pass's text.
    const ok = resolveRequest({ ...req, hires: { prompt: 'sharp <lora:ink:0.5> cat', negativePrompt: 'haze' } });
    expect(ok.hiresPrompts).toEqual({ prompt: 'sharp  cat', negativePrompt: 'haze' });
    expect(resolveRequest({ ...req, hires: {} }).hiresPrompts).toEqual({ prompt: 'a cat ', negativePrompt: 'fog' });
    for (const hrPrompt of ['sharp cat', 'sharp <lora:ink:1>', 'sharp <lora:ink:0.5> <lora:other:1>']) {
      const e = refusalOf(() => resolveRequest({ ...req, hires: { prompt: hrPrompt } }));
      expect(e.code).toBe('hires_lora_mismatch');
      expect(e.hint).toContain('same <lora:...> tags');
    }
  });
});
