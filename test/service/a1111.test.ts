import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bearer, postJson, startHarness, type Harness } from './support/harness.ts';

// The JSON body webuiapi (mix1009/sdwebuiapi, webuiapi/webuiapi.py) posts for
//   api = webuiapi.WebUIApi(host, port, sampler='Euler a', steps=20, username='u', password=KEY)
//   api.txt2img(prompt="cute squirrel", negative_prompt="ugly, out of frame", seed=1003, cfg_scale=7)
// as requests' json.dumps writes it: Python floats keep their ".0", the HiResUpscaler enum
// serialises to its value, None to null, key order as in the client's payload dict.
const WEBUIAPI_TXT2IMG_BODY =
  '{"enable_hr": false, "hr_scale": 2, "hr_upscaler": "Latent", "hr_second_pass_steps": 0, "hr_resize_x": 0, "hr_resize_y": 0, ' +
  '"denoising_strength": 0.7, "firstphase_width": 0, "firstphase_height": 0, "prompt": "cute squirrel", "styles": [], "seed": 1003, ' +
  '"subseed": -1, "subseed_strength": 0.0, "seed_resize_from_h": 0, "seed_resize_from_w": 0, "batch_size": 1, "n_iter": 1, "steps": 20, ' +
  '"cfg_scale": 7, "width": 512, "height": 512, "restore_faces": false, "tiling": false, "do_not_save_samples": false, ' +
  '"do_not_save_grid": false, "negative_prompt": "ugly, out of frame", "eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0, "s_noise": 1, ' +
  '"override_settings": {}, "override_settings_restore_afterwards": true, "sampler_name": "Euler a", "sampler_index": "Euler a", ' +
  '"script_name": null, "script_args": [], "send_images": true, "save_images": false, "alwayson_scripts": {}}';

function webuiapiImg2ImgBody(initPngB64: string): string {
  return (
    `{"init_images": ["data:image/png;base64,${initPngB64}"], "resize_mode": 0, "denoising_strength": 0.75, "mask_blur": 4, ` +
    '"inpainting_fill": 0, "inpaint_full_res": true, "inpaint_full_res_padding": 0, "inpainting_mask_invert": 0, ' +
    '"initial_noise_multiplier": 1, "prompt": "a teal vase", "styles": [], "seed": 77, "subseed": -1, "subseed_strength": 0, ' +
    '"seed_resize_from_h": 0, "seed_resize_from_w": 0, "batch_size": 1, "n_iter": 1, "steps": 20, "cfg_scale": 7.0, ' +
    '"image_cfg_scale": 1.5, "width": 256, "height": 256, "restore_faces": false, "tiling": false, "do_not_save_samples": false, ' +
    '"do_not_save_grid": false, "negative_prompt": "", "eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0, "s_noise": 1, ' +
    '"override_settings": {}, "override_settings_restore_afterwards": true, "sampler_name": "Euler a", "sampler_index": "Euler a", ' +
    '"include_init_images": false, "script_name": null, "script_args": [], "send_images": true, "save_images": false, "alwayson_scripts": {}}'
  );
}

/** What webuiapi's _to_api_result does: base64-decode each image, json.loads(info). */
async function decodeLikeWebuiapi(res: Response) {
  if (res.status !== 200) throw new Error(`RuntimeError(${res.status}, ${await res.text()})`);
  const r = (await res.json()) as { images: string[]; parameters: Record<string, unknown>; info: string };
  const images = await Promise.all(r.images.map((b64) => sharp(Buffer.from(b64, 'base64')).metadata()));
  return { images, parameters: r.parameters, info: JSON.parse(r.info) as Record<string, unknown> };
}

const gradientPng = (w: number, h: number) =>
  sharp({ create: { width: w, height: h, channels: 3, background: { r: 30, g: 140, b: 150 } } }).png().toBuffer();

describe('A1111-compatible API', () => {
  let h: Harness;
  let basic: Record<string, string>;
  beforeAll(async () => {
    h = await startHarness({ backend: { stepMs: 0 } });
    basic = { authorization: 'Basic ' + Buffer.from(`u:${h.keys.creator}`).toString('base64') };
  });
  afterAll(async () => h.close());

  it('answers webuiapi\'s exact txt2img request, decoded as webuiapi decodes it', async () => {
    // WebUIApi.__init__ with credentials calls check_extensions -> GET /sdapi/v1/scripts.
    const scripts = await fetch(`${h.base}/sdapi/v1/scripts`, { headers: basic });
    expect(await scripts.json()).toEqual({ txt2img: [], img2img: [] });

    const res = await fetch(`${h.base}/sdapi/v1/txt2img`, { method: 'POST', headers: { ...basic, 'content-type': 'application/json' }, body: WEBUIAPI_TXT2IMG_BODY });
    const result = await decodeLikeWebuiapi(res);
    expect(result.images.map((m) => [m.format, m.width, m.height])).toEqual([['png', 512, 512]]);
    expect(result.info).toMatchObject({
      prompt: 'cute squirrel', negative_prompt: 'ugly, out of frame', seed: 1003, all_seeds: [1003], sampler_name: 'Euler a',
      cfg_scale: 7, steps: 20, width: 512, height: 512, batch_size: 1, sd_model_name: 'procedural-a',
    });
    expect((result.info.infotexts as string[])[0]).toMatch(/Seed: 1003/);
    expect(result.parameters).toMatchObject({ prompt: 'cute squirrel', steps: 20, sampler_name: 'Euler a', seed: 1003 });
    const seen = h.components.backend.requests.at(-1)!;
    expect(seen).toMatchObject({ mode: 'txt2img', steps: 20, sampler: 'Euler a', cfgScale: 7, seed: 1003, width: 512, height: 512, negativePrompt: 'ugly, out of frame', eta: 1 });
  });

  it('uses A1111\'s own defaults for fields a client leaves out', async () => {
    const res = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: 'defaults' }, basic);
    const r = await decodeLikeWebuiapi(res);
    const seen = h.components.backend.requests.at(-1)!;
    // StableDiffusionProcessing: steps 50, cfg 7, 512x512; the API model's sampler_index "Euler"; seed -1 = random.
    expect(seen).toMatchObject({ steps: 50, cfgScale: 7, width: 512, height: 512, sampler: 'Euler', batchSize: 1, nIter: 1, negativePrompt: '' });
    expect(seen.seed).toBeGreaterThanOrEqual(0);
    expect(r.info.seed).toBe(seen.seed);
  });

  it('reads <lora:name:weight> tags from the prompt and refuses an unknown adapter by name', async () => {
    await decodeLikeWebuiapi(await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: 'a mask <lora:blood_framework:0.6>, studio light', steps: 2, width: 64, height: 64 }, basic));
    expect(h.components.backend.requests.at(-1)).toMatchObject({ prompt: 'a mask, studio light', adapters: [{ name: 'blood_framework', weight: 0.6 }] });
    expect(h.components.screener.inputs.at(-1)!.adapters).toEqual(['blood_framework']);
    const bad = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: '<lora:nope:1>', steps: 2, width: 64, height: 64 }, basic);
    expect(bad.status).toBe(422);
    expect(await bad.json()).toMatchObject({ error: 'ValidationError', detail: expect.stringContaining("adapter 'nope' not found") });
  });

  it('answers webuiapi\'s img2img request with a data-URL init image', async () => {
    const init = (await gradientPng(96, 96)).toString('base64');
    const res = await fetch(`${h.base}/sdapi/v1/img2img`, { method: 'POST', headers: { ...basic, 'content-type': 'application/json' }, body: webuiapiImg2ImgBody(init) });
    const r = await decodeLikeWebuiapi(res);
    expect(r.images.map((m) => [m.width, m.height])).toEqual([[256, 256]]);
    expect(r.parameters.init_images).toBeNull();
    const seen = h.components.backend.requests.at(-1)!;
    expect(seen.mode).toBe('img2img');
    expect(seen.denoisingStrength).toBe(0.75);
    expect(seen.initImages).toHaveLength(1);
    expect((await sharp(seen.initImages[0]).metadata()).width).toBe(96);
  });

  it('lists models, loras and samplers and switches the checkpoint through /options', async () => {
    const models = (await (await fetch(`${h.base}/sdapi/v1/sd-models`, { headers: basic })).json()) as { title: string; model_name: string }[];
    expect(models.map((m) => m.model_name)).toEqual(['procedural-a', 'procedural-b']);
    const loras = (await (await fetch(`${h.base}/sdapi/v1/loras`, { headers: basic })).json()) as { name: string }[];
    expect(loras[0]!.name).toBe('blood_framework');
    const samplers = (await (await fetch(`${h.base}/sdapi/v1/samplers`, { headers: basic })).json()) as { name: string }[];
    expect(samplers.map((s) => s.name)).toContain('DPM++ 2M');

    const studio = bearer(h.keys.studio);
    const set = await postJson(`${h.base}/sdapi/v1/options`, { sd_model_checkpoint: models[1]!.title }, studio);
    expect(set.status).toBe(200);
    const opts = (await (await fetch(`${h.base}/sdapi/v1/options`, { headers: studio })).json()) as { sd_model_checkpoint: string };
    expect(opts.sd_model_checkpoint).toBe(models[1]!.title);
    const unknown = await postJson(`${h.base}/sdapi/v1/options`, { sd_model_checkpoint: 'missing.safetensors' }, studio);
    expect(unknown.status).toBe(422);
    await postJson(`${h.base}/sdapi/v1/options`, { sd_model_checkpoint: models[0]!.title }, studio);
  });

  it('refuses features Redline does not have by name instead of ignoring them', async () => {
    // A hires pass on another checkpoint (Redline runs one per job).
    const hr = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: 'x', width: 64, height: 64, enable_hr: true, hr_checkpoint_name: 'procedural-b' }, basic);
    expect(hr.status).toBe(422);
    expect(((await hr.json()) as { detail: string }).detail).toMatch(/hr_checkpoint_name 'procedural-b' is another checkpoint/);
    const ov = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: 'x', override_settings: { redline_intensity: 3 } }, basic);
    expect(ov.status).toBe(422);
    expect(((await ov.json()) as { detail: string }).detail).toMatch(/override_settings.redline_intensity is not supported/);
    const sampler = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: 'x', sampler_name: 'Nonexistent' }, basic);
    expect(sampler.status).toBe(422);
  });

  it('reports the running job on /progress with step counts and a preview', async () => {
    const slow = await startHarness({ backend: { stepMs: 20, previewEvery: 1 } });
    try {
      const key = bearer(slow.keys.creator);
      const pending = postJson(`${slow.base}/sdapi/v1/txt2img`, { prompt: 'x', steps: 40, width: 64, height: 64 }, key);
      let seen: { progress: number; state: { sampling_step: number; sampling_steps: number; job_count: number }; current_image: string | null } | undefined;
      for (let i = 0; i < 100; i++) {
        const p = (await (await fetch(`${slow.base}/sdapi/v1/progress`, { headers: key })).json()) as typeof seen;
        if (p!.state.sampling_step >= 3) { seen = p; break; }
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(seen).toBeDefined();
      expect(seen!.state.sampling_steps).toBe(40);
      expect(seen!.state.job_count).toBe(1);
      expect(seen!.progress).toBeCloseTo(seen!.state.sampling_step / 40, 5);
      expect((await sharp(Buffer.from(seen!.current_image!, 'base64')).metadata()).format).toBe('png');
      expect((await pending).status).toBe(200);
      const idle = (await (await fetch(`${slow.base}/sdapi/v1/progress`, { headers: key })).json()) as { progress: number; state: { job_count: number } };
      expect(idle).toMatchObject({ progress: 0, state: { job_count: 0 } });
    } finally {
      await slow.close();
    }
  });
});

describe('upload hardening', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ backend: { stepMs: 0 }, server: { uploadLimits: { maxBytes: 64 * 1024, maxPixels: 256 * 256, formats: ['png', 'jpeg', 'webp'] } } });
  });
  afterAll(async () => h.close());
  const img2img = (init: string, extra: Record<string, unknown> = {}) =>
    postJson(`${h.base}/sdapi/v1/img2img`, { prompt: 'x', init_images: [init], steps: 2, width: 64, height: 64, ...extra }, bearer(h.keys.creator));

  it('limits uploads by bytes, pixels and real type', async () => {
    const tooBig = Buffer.alloc(100 * 1024, 7).toString('base64');
    const r1 = await img2img(tooBig);
    expect(r1.status).toBe(413);
    expect(((await r1.json()) as { detail: string }).detail).toMatch(/larger than 65536 bytes/);

    const manyPixels = await sharp({ create: { width: 300, height: 300, channels: 3, background: '#000' } }).png().toBuffer();
    const r2 = await img2img(manyPixels.toString('base64'));
    expect(r2.status).toBe(413);

    // A GIF sent with a PNG data-URL label: judged by its bytes, not its label.
    const gif = await sharp({ create: { width: 16, height: 16, channels: 3, background: '#000' } }).gif().toBuffer();
    const r3 = await img2img(`data:image/png;base64,${gif.toString('base64')}`);
    expect(r3.status).toBe(422);
    expect(((await r3.json()) as { detail: string }).detail).toMatch(/type 'gif' is not accepted/);

    const r4 = await img2img(Buffer.from('not an image at all').toString('base64'));
    expect(r4.status).toBe(422);
  });

  it('refuses init images by URL unless enabled, and private addresses when enabled', async () => {
    const off = await postJson(`${h.base}/sdapi/v1/img2img`, { prompt: 'x', init_image_url: 'http://example.com/a.png', steps: 2, width: 64, height: 64 }, bearer(h.keys.creator));
    expect(off.status).toBe(403);
    expect(((await off.json()) as { detail: string }).detail).toMatch(/disabled/);

    const on = await startHarness({ server: { allowInitImageUrls: true } });
    try {
      for (const url of [`${on.base}/api/v1/health`, 'http://localhost:9/x.png', 'http://169.254.169.254/latest/meta-data', 'http://[::1]:9/x.png', 'http://10.1.2.3/x.png']) {
        const r = await postJson(`${on.base}/sdapi/v1/img2img`, { prompt: 'x', init_image_url: url, steps: 2, width: 64, height: 64 }, bearer(on.keys.creator));
        expect(r.status, url).toBe(403);
        expect(((await r.json()) as { detail: string }).detail, url).toMatch(/private or loopback/);
      }
    } finally {
      await on.close();
    }
  });
});
