// The hires fix over the A1111 API (enable_hr, hr_*) and the native API: refusals on the
// procedural test backend, and a real two-pass generation on the embedded model.
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseInfotext } from '../../src/pipeline/infotext.ts';
import { startEmbeddedHarness } from './support/embedded-harness.ts';
import { bearer, postJson, startHarness, type Harness } from './support/harness.ts';

const UPSCALERS = ['Latent', 'Latent (antialiased)', 'Latent (bicubic)', 'Latent (bicubic antialiased)', 'Latent (nearest)', 'Latent (nearest-exact)', 'None', 'Lanczos', 'Nearest'];

describe('hires fix requests that are refused', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ backend: { stepMs: 0 } });
  });
  afterAll(async () => h.close());

  it('an unknown hr_upscaler is a 422 that lists the valid ones', async () => {
    const res = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: 'a lighthouse', width: 256, height: 256, enable_hr: true, hr_upscaler: 'R-ESRGAN 4x+' }, bearer(h.keys.creator));
    expect(res.status).toBe(422);
    const { detail } = (await res.json()) as { detail: string };
    expect(detail).toContain('Unknown hires upscaler "R-ESRGAN 4x+"');
    for (const name of UPSCALERS) expect(detail).toContain(name);
  });

  // A1111 1.9+ has a scheduler field; one Redline does not have must not silently become
  // the sampler's own schedule.
  it('an unknown main-pass scheduler is a 422 naming it and the valid ones', async () => {
    const res = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: 'a lighthouse', width: 256, height: 256, sampler_name: 'Euler', scheduler: 'Exponential' }, bearer(h.keys.creator));
    expect(res.status).toBe(422);
    const { detail } = (await res.json()) as { detail: string };
    expect(detail).toContain("scheduler 'Exponential'");
    expect(detail).toContain('Automatic, Karras');
    const ok = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: 'a lighthouse', width: 256, height: 256, sampler_name: 'DPM++ 2M', scheduler: 'Karras' }, bearer(h.keys.creator));
    expect(ok.status).toBe(200);
  });

  it('the same on the native API', async () => {
    const res = await postJson(`${h.base}/api/v1/jobs`, { prompt: 'a lighthouse', width: 256, height: 256, hires: { upscaler: 'SwinIR_4x' } }, bearer(h.keys.creator));
    expect(res.status).toBe(422);
    expect(((await res.json()) as { error: { message: string } }).error.message).toContain('Latent (nearest-exact)');
  });

  it('the role\'s size limit applies to the hires target, not the first pass', async () => {
    // creator: 768 x 768 pixels at most; 512 x 512 is fine, x2 is 1024 x 1024.
    const res = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: 'a lighthouse', width: 512, height: 512, enable_hr: true, hr_scale: 2 }, bearer(h.keys.creator));
    expect(res.status).toBe(403);
    expect(((await res.json()) as { detail: string }).detail).toMatch(/1024x1024 is over the 589824-pixel limit/);
    const resized = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: 'a lighthouse', width: 512, height: 512, enable_hr: true, hr_resize_x: 800, hr_resize_y: 800 }, bearer(h.keys.creator));
    expect(resized.status).toBe(403);
  });

  it('a target that is not a multiple of 8 is a 422 naming the size', async () => {
    const res = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: 'a lighthouse', width: 256, height: 256, enable_hr: true, hr_scale: 1.3 }, bearer(h.keys.creator));
    expect(res.status).toBe(422);
    expect(((await res.json()) as { detail: string }).detail).toMatch(/332x332, which is not a multiple of 8/);
  });

  it('lists the upscalers as A1111 does: /upscalers (pixel) and /latent-upscale-modes', async () => {
    const pixel = (await (await fetch(`${h.base}/sdapi/v1/upscalers`, { headers: bearer(h.keys.creator) })).json()) as { name: string; scale: number }[];
    expect(pixel.map((u) => u.name)).toEqual(['None', 'Lanczos', 'Nearest']);
    const latent = (await (await fetch(`${h.base}/sdapi/v1/latent-upscale-modes`, { headers: bearer(h.keys.creator) })).json()) as { name: string }[];
    expect(latent.map((u) => u.name)).toEqual(UPSCALERS.slice(0, 6));
  });

  it('enable_hr false ignores the hr_* fields, as A1111 does', async () => {
    const res = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: 'a lighthouse', width: 64, height: 64, steps: 2, enable_hr: false, hr_upscaler: 'R-ESRGAN 4x+', hr_scale: 9 }, bearer(h.keys.creator));
    expect(res.status).toBe(200);
  });
});

describe('hires fix on the embedded model through the A1111 API', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startEmbeddedHarness('hires-empty');
  }, 120_000);
  afterAll(async () => h?.close());

  it('enable_hr: a 64 px first pass, a 128 px image, A1111\'s hires fields in the infotext', async () => {
    const res = await postJson(`${h.base}/sdapi/v1/txt2img`, {
      prompt: 'a red circle on a white background', seed: 5, steps: 2, cfg_scale: 7, width: 64, height: 64, sampler_name: 'Euler',
      enable_hr: true, hr_scale: 2, hr_upscaler: 'Latent (antialiased)', hr_second_pass_steps: 2, denoising_strength: 0.5,
    }, bearer(h.keys.creator));
    expect(res.status).toBe(200);
    const body = (await res.json()) as { images: string[]; info: string };
    expect(body.images).toHaveLength(1);
    const meta = await sharp(Buffer.from(body.images[0]!, 'base64')).metadata();
    expect([meta.width, meta.height]).toEqual([128, 128]);
    const info = JSON.parse(body.info) as { width: number; height: number; denoising_strength: number; infotexts: string[]; extra_generation_params: Record<string, unknown> };
    // A1111 reports the first pass's size; the hires entries come from extra_generation_params.
    expect([info.width, info.height, info.denoising_strength]).toEqual([64, 64, 0.5]);
    expect(info.extra_generation_params).toMatchObject({ 'Hires upscale': 2, 'Hires steps': 2, 'Hires upscaler': 'Latent (antialiased)', 'Denoising strength': 0.5 });
    expect(info.infotexts[0]).toMatch(/Size: 64x64, .*Denoising strength: 0\.5, Hires upscale: 2, Hires steps: 2, Hires upscaler: Latent \(antialiased\)/);
    expect(parseInfotext(info.infotexts[0]!).params['Hires upscaler']).toBe('Latent (antialiased)');
  }, 120_000);
});
