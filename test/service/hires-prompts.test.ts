// A1111's hires fields beyond the target size over the service: hr_prompt,
// hr_negative_prompt, hr_sampler_name, hr_scheduler, hr_checkpoint_name, firstphase_* and
// override_settings.pad_cond_uncond. What A1111 clients send by default (webuiapi: null
// checkpoint and sampler, empty hires prompts, firstphase 0; A1111's UI: "Use same ...")
// is accepted; hires prompts are screened by the policy like the prompt; a real run on the
// embedded model writes A1111's hires entries into the infotext.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseInfotext } from '../../src/pipeline/infotext.ts';
import { AuditLog, type AuditRow } from '../../src/safety/audit/audit-log.ts';
import { defaultPolicy } from '../../src/safety/policy/policy.ts';
import { startEmbeddedHarness } from './support/embedded-harness.ts';
import { bearer, postJson, startHarness, startPolicyHarness, tempDir, type Harness } from './support/harness.ts';

const txt2img = (h: Harness, body: Record<string, unknown>) => postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: 'a lighthouse at dusk', steps: 2, width: 64, height: 64, ...body }, bearer(h.keys.creator));
const detail = async (res: Response) => ((await res.json()) as { detail: string }).detail;

describe('A1111 hires fields on the procedural backend', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ backend: { stepMs: 0 } });
  });
  afterAll(async () => h.close());
  const lastRequest = () => h.components.backend.requests.at(-1)!;

  it('webuiapi\'s defaults and A1111\'s "Use same ..." values are the first pass\'s', async () => {
    for (const same of [
      { hr_checkpoint_name: null, hr_sampler_name: null, hr_prompt: '', hr_negative_prompt: '', firstphase_width: 0, firstphase_height: 0 },
      { hr_checkpoint_name: 'Use same checkpoint', hr_sampler_name: 'Use same sampler', hr_scheduler: 'Use same scheduler', hr_prompt: null, hr_negative_prompt: null },
      { hr_checkpoint_name: '', hr_sampler_name: '', hr_scheduler: '' },
    ]) {
      const res = await txt2img(h, { negative_prompt: 'fog', sampler_name: 'Euler', enable_hr: true, hr_scale: 2, denoising_strength: 0.5, ...same });
      expect(res.status).toBe(200);
      expect(lastRequest().hires).toMatchObject({ prompt: null, negativePrompt: null, sampler: null, checkpoint: null });
    }
  });

  it('hr_prompt, hr_negative_prompt and hr_sampler_name reach the backend; hr_scheduler Karras folds into the sampler name', async () => {
    expect((await txt2img(h, { sampler_name: 'Euler', enable_hr: true, hr_prompt: 'a lighthouse at dusk, sharp', hr_negative_prompt: 'haze', hr_sampler_name: 'DPM++ 2M', hr_scheduler: 'Karras' })).status).toBe(200);
    expect(lastRequest().hires).toMatchObject({ prompt: 'a lighthouse at dusk, sharp', negativePrompt: 'haze', sampler: 'DPM++ 2M Karras' });
    // The first pass's scheduler is inherited, as A1111's hr_scheduler None is.
    expect((await txt2img(h, { sampler_name: 'DPM++ 2M', scheduler: 'Karras', enable_hr: true, hr_sampler_name: 'Euler a' })).status).toBe(422);
    expect((await txt2img(h, { sampler_name: 'DPM++ 2M', enable_hr: true, hr_scheduler: 'Karras' })).status).toBe(200);
    expect(lastRequest().hires?.sampler).toBe('DPM++ 2M Karras');
  });

  it('an unknown hr_sampler_name is a 422 listing the valid samplers; an unknown hr_scheduler lists the schedulers', async () => {
    const res = await txt2img(h, { enable_hr: true, hr_sampler_name: 'DPM++ 3M SDE' });
    expect(res.status).toBe(422);
    const text = await detail(res);
    expect(text).toContain('Hires sampler: Unknown sampler "DPM++ 3M SDE"');
    for (const name of ['Euler a', 'DDIM', 'DPM++ 2M Karras', 'UniPC']) expect(text).toContain(name);
    const sched = await txt2img(h, { enable_hr: true, hr_scheduler: 'Exponential' });
    expect(sched.status).toBe(422);
    expect(await detail(sched)).toMatch(/hr_scheduler 'Exponential'.*Automatic, Karras/);
  });

  it('hr_checkpoint_name: the job\'s own checkpoint is accepted, another one is a 422, an unknown one too', async () => {
    expect((await txt2img(h, { enable_hr: true, hr_checkpoint_name: 'procedural-a' })).status).toBe(200);
    const other = await txt2img(h, { enable_hr: true, hr_checkpoint_name: 'procedural-b.safetensors [abcdef0123]' });
    expect(other.status).toBe(422);
    expect(await detail(other)).toMatch(/another checkpoint than the first pass's .*one checkpoint/);
    expect((await txt2img(h, { enable_hr: true, hr_checkpoint_name: 'sdxl_base' })).status).toBe(422);
    // With override_settings naming the other model, that one is the job's.
    expect((await txt2img(h, { enable_hr: true, override_settings: { sd_model_checkpoint: 'procedural-b' }, hr_checkpoint_name: 'procedural-b' })).status).toBe(200);
  });

  it('<lora:> tags in hr_prompt must be the prompt\'s: the same ones pass (taken out of the text), others are a 422', async () => {
    const prompt = 'a lighthouse <lora:blood_framework:0.5>';
    expect((await txt2img(h, { prompt, enable_hr: true, hr_prompt: 'sharp lighthouse <lora:blood_framework:0.5>' })).status).toBe(200);
    expect(lastRequest().hires?.prompt).toBe('sharp lighthouse');
    for (const hrPrompt of ['sharp lighthouse', 'sharp <lora:blood_framework:1>']) {
      const res = await txt2img(h, { prompt, enable_hr: true, hr_prompt: hrPrompt });
      expect(res.status).toBe(422);
      expect(await detail(res)).toMatch(/hr_prompt names other LoRAs .* than the first pass \(<lora:blood_framework:0\.5>\)/);
    }
  });

  it('firstphase_width/height: the first pass\'s size when the target agrees with width/height; otherwise a 422 naming both', async () => {
    expect((await txt2img(h, { width: 128, height: 128, enable_hr: true, firstphase_width: 64, firstphase_height: 64 })).status).toBe(200);
    expect([lastRequest().width, lastRequest().height]).toEqual([64, 64]);
    const off = await txt2img(h, { width: 256, height: 256, enable_hr: true, firstphase_width: 64, firstphase_height: 64 });
    expect(off.status).toBe(422);
    expect(await detail(off)).toContain('firstphase 64x64 with hr_scale 2 gives 128x128, but width/height ask for 256x256');
    expect((await txt2img(h, { width: 128, height: 128, enable_hr: true, firstphase_width: 64 })).status).toBe(422);
  });

  // A1111 1.x StableDiffusionProcessingTxt2Img.__post_init__ swaps firstphase_* into
  // width/height before it looks at enable_hr, so without the hires fix the one pass runs
  // at the firstphase size, and the info JSON reports that size.
  it('firstphase_width/height without enable_hr: one pass at the firstphase size, as A1111 runs it', async () => {
    const res = await txt2img(h, { width: 128, height: 128, enable_hr: false, firstphase_width: 64, firstphase_height: 96 });
    expect(res.status).toBe(200);
    expect(lastRequest().hires).toBeFalsy();
    expect([lastRequest().width, lastRequest().height]).toEqual([64, 96]);
    const info = JSON.parse(((await res.json()) as { info: string }).info) as { width: number; height: number };
    expect([info.width, info.height]).toEqual([64, 96]);
    // One side only is still a 422: A1111 would run with a side of 0.
    expect(await detail(await txt2img(h, { width: 128, height: 128, firstphase_width: 64 }))).toMatch(/must both be set \(got 64x0\)/);
  });

  it('override_settings.pad_cond_uncond: true reaches the backend; not a boolean, or pad_cond_uncond_v0 on, is a 422', async () => {
    expect((await txt2img(h, { override_settings: { pad_cond_uncond: true } })).status).toBe(200);
    expect(lastRequest().padCondUncond).toBe(true);
    expect((await txt2img(h, { override_settings: { pad_cond_uncond: false, pad_cond_uncond_v0: false } })).status).toBe(200);
    expect(lastRequest().padCondUncond).toBeUndefined();
    expect((await txt2img(h, { override_settings: { pad_cond_uncond: 'yes' } })).status).toBe(422);
    expect(await detail(await txt2img(h, { override_settings: { pad_cond_uncond_v0: true } }))).toMatch(/pad_cond_uncond_v0 .* not implemented/);
  });

  it('the native API takes hires.prompt, hires.negative_prompt, hires.sampler_name and pad_cond_uncond', async () => {
    const res = await postJson(`${h.base}/api/v1/jobs`, {
      prompt: 'a lighthouse', steps: 2, width: 64, height: 64, pad_cond_uncond: true,
      hires: { prompt: 'a sharp lighthouse', negative_prompt: 'haze', sampler_name: 'Euler a' },
    }, bearer(h.keys.creator));
    expect(res.status).toBe(202);
    const bad = await postJson(`${h.base}/api/v1/jobs`, { prompt: 'a lighthouse', steps: 2, width: 64, height: 64, hires: { sampler_name: 'Heun' } }, bearer(h.keys.creator));
    expect(bad.status).toBe(422);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toContain('DPM++ 2M Karras');
  });
});

describe('hires prompts go through the policy screening', () => {
  const dataDir = tempDir('hires-screening');
  let log: AuditLog;
  let h: Harness;
  beforeAll(async () => {
    log = new AuditLog(join(dataDir, 'audit.db'));
    h = await startPolicyHarness({ policy: defaultPolicy(), log, dataDir });
  });
  afterAll(async () => {
    await h?.close();
    log?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });
  const screenRows = (): AuditRow[] => [...log.rows()].filter((r) => r.kind === 'screen');

  it('a hires prompt the policy refuses is refused like a prompt (403), with an audit row of the hires prompts', async () => {
    const res = await txt2img(h, { prompt: 'a knight in armour', enable_hr: true, hr_prompt: 'a ch1ld covered in bl00d' });
    expect(res.status).toBe(403);
    const row = screenRows().find((r) => r.event.verdict === 'refuse' && r.event.prompts?.prompt === 'a ch1ld covered in bl00d')!;
    expect(row.event.details).toMatchObject({ screened: 'hires prompts' });
    expect(row.event.categories!.map((c) => c.category)).toContain('minors_graded');
  });

  it('a combination across the passes is refused: a child in the prompt, injury wording in the hires prompt', async () => {
    const res = await txt2img(h, { prompt: 'a child at a birthday party', enable_hr: true, hr_prompt: 'covered in blood, deep wounds' });
    expect(res.status).toBe(403);
    const both = screenRows().findLast((r) => r.event.details?.screened === 'prompts and hires prompts')!;
    expect(both.event.prompts?.prompt).toBe('a child at a birthday party\ncovered in blood, deep wounds');
    expect(both.event.verdict).toBe('refuse');
    expect(both.event.categories!.find((c) => c.category === 'minors_graded')!.rules).toEqual(['clear_minor+injury']);
    // The hires prompt alone was graded, not refused.
    expect(screenRows().findLast((r) => r.event.details?.screened === 'hires prompts')!.event.verdict).toBe('clamp');
    // The prompts alone were allowed: the refusal comes from the hires screening.
    expect(screenRows().find((r) => r.event.prompts?.prompt === 'a child at a birthday party')!.event.verdict).toBe('allow');
  });

  it('graded wording only in the hires prompt clamps the job to the role\'s cap (safe guidance applies)', async () => {
    const res = await txt2img(h, { prompt: 'a zombie in a field', enable_hr: true, hr_prompt: 'a zombie with a deep bleeeding w0und' });
    expect(res.status).toBe(200);
    const info = JSON.parse(((await res.json()) as { info: string }).info) as { redline: { intensity: { verdict: string; effective: number; requested: number } } };
    expect(info.redline.intensity).toMatchObject({ verdict: 'clamp', requested: 3, effective: 2 });
  });

  it('an empty hr_prompt is the prompt: screened once', async () => {
    const before = screenRows().length;
    expect((await txt2img(h, { prompt: 'a teal gradient', enable_hr: true, hr_prompt: '' })).status).toBe(200);
    expect(screenRows().length).toBe(before + 1);
  });
});

describe('hires prompts, sampler and pad_cond_uncond on the embedded model through the A1111 API', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startEmbeddedHarness('hires-prompts-empty');
  }, 120_000);
  afterAll(async () => h?.close());

  it('the infotext carries Hires sampler, Hires prompt and Hires negative prompt before Hires upscale, and Pad conds', async () => {
    // Over 75 tokens: two chunks against the negative prompt's one, so padding happens.
    const long = Array.from({ length: 40 }, () => 'red circle').join(', ');
    const res = await txt2img(h, {
      prompt: 'a red circle on a white background', negative_prompt: 'blurry', seed: 5, cfg_scale: 7, sampler_name: 'Euler',
      enable_hr: true, hr_scale: 2, hr_second_pass_steps: 1, denoising_strength: 0.5,
      hr_prompt: long, hr_negative_prompt: 'fog', hr_sampler_name: 'Euler a', override_settings: { pad_cond_uncond: true },
    });
    expect(res.status).toBe(200);
    const info = JSON.parse(((await res.json()) as { info: string }).info) as { infotexts: string[]; extra_generation_params: Record<string, unknown> };
    const text = info.infotexts[0]!;
    expect(text).toContain(`Denoising strength: 0.5, Hires sampler: Euler a, Hires prompt: "${long}", Hires negative prompt: fog, Hires upscale: 2, Hires steps: 1, Pad conds: True`);
    expect(parseInfotext(text).params).toMatchObject({ 'Hires prompt': long, 'Hires sampler': 'Euler a', 'Pad conds': 'True' });
    expect(info.extra_generation_params).toMatchObject({ 'Hires sampler': 'Euler a', 'Hires prompt': long, 'Hires negative prompt': 'fog', 'Pad conds': true });
  }, 120_000);

  it('no padding (prompts of one chunk each), no Pad conds in the infotext or the info JSON', async () => {
    const res = await txt2img(h, { prompt: 'a red circle', negative_prompt: 'blurry', seed: 5, sampler_name: 'Euler', override_settings: { pad_cond_uncond: true } });
    expect(res.status).toBe(200);
    const info = JSON.parse(((await res.json()) as { info: string }).info) as { infotexts: string[]; extra_generation_params: Record<string, unknown> };
    expect(info.infotexts[0]).not.toContain('Pad conds');
    expect(info.extra_generation_params).not.toHaveProperty('Pad conds');
  }, 120_000);
});
