// The web studio in real Chromium (Debian's, driven by playwright-core) against a real
// `redline serve` running the generation pipeline on the golden tiny model, the policy
// screener with role caps, the audit log and provenance marks. Screenshots go to
// test-artifacts/web/.
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Generator, resolveRequest } from '../../src/pipeline/generate.ts';
import { StableDiffusionModel } from '../../src/pipeline/model.ts';
import { goldenPath } from '../helpers/golden.ts';
import { tempDir } from '../service/support/harness.ts';
import {
  addUser, ensureArtifactsDir, ensureWebBuild, goldenLoraDir, launchChromium, PROTECTED_NAME, serveGolden, writeTestPolicy, type Served,
} from './support/studio.ts';

const PASSWORD = 'correct horse battery staple';
// The tiny model's native size; 12 steps paced at 120 ms each keep a job in flight ~1.5 s.
const SIZE = 64;
const STEPS = 12;
const SEED = 1234;

let dataDir: string;
let served: Served;
let browser: Browser;
let shots: string;
let lora: { dir: string; name: string };

// Browser console errors and uncaught exceptions per page (CSP violations show up here).
const consoleErrors = new WeakMap<Page, string[]>();

async function signIn(context: BrowserContext, username: string): Promise<Page> {
  const page = await context.newPage();
  await page.goto(served.base);
  await page.getByLabel('User name').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByTestId('whoami').waitFor();
  // From here on (the signed-out page's first /me is an expected 401).
  const errors: string[] = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  consoleErrors.set(page, errors);
  return page;
}

function txt2img(page: Page) {
  return page.getByRole('region', { name: 'txt2img' });
}

async function fillSettings(page: Page, prompt: string, opts: { seed?: number } = {}) {
  const tab = txt2img(page);
  await tab.getByLabel('Prompt', { exact: true }).fill(prompt);
  await tab.getByLabel('Negative prompt').fill('blurry');
  await tab.getByLabel('Sampler').selectOption('Euler a');
  await tab.getByLabel('Sampling steps').fill(String(STEPS));
  await tab.getByLabel('Width', { exact: true }).fill(String(SIZE));
  await tab.getByLabel('Height', { exact: true }).fill(String(SIZE));
  await tab.getByLabel('Seed (-1 = random)').fill(String(opts.seed ?? -1));
}

beforeAll(async () => {
  ensureWebBuild();
  shots = ensureArtifactsDir();
  dataDir = tempDir('web');
  const policy = writeTestPolicy(dataDir);
  lora = goldenLoraDir(dataDir);
  addUser(dataDir, 'creator1', 'creator', PASSWORD);
  addUser(dataDir, 'admin1', 'admin', PASSWORD);
  served = await serveGolden(dataDir, { REDLINE_POLICY: policy, REDLINE_WEB_LORA_DIR: lora.dir, REDLINE_WEB_STEP_MS: '120' });
  browser = await launchChromium();
}, 300_000);

afterAll(async () => {
  await browser?.close();
  await served?.proc.kill();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe('web studio in Chromium', () => {
  let creator: BrowserContext;
  let page: Page;

  beforeAll(async () => {
    creator = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  });
  afterAll(async () => {
    await creator?.close();
  });

  it('serves the built studio under the server\'s CSP and asks to sign in; a wrong password shows the API\'s message', async () => {
    page = await creator.newPage();
    const res = await page.goto(served.base);
    expect(res?.status()).toBe(200);
    expect(res?.headers()['content-security-policy']).toContain("script-src 'self'");
    await expect(page.getByRole('heading', { name: 'Redline studio' }).isVisible()).resolves.toBe(true);
    // The page's own script is a hashed file under /assets/; nothing else is reachable there.
    const script = await page.locator('script[type=module]').getAttribute('src');
    const asset = await fetch(served.base + script!);
    expect([asset.status, asset.headers.get('content-type'), asset.headers.get('cache-control')]).toEqual([200, 'text/javascript; charset=utf-8', 'public, max-age=31536000, immutable']);
    for (const probe of ['/assets/..%2Findex.html', '/assets/%2e%2e%2f%2e%2e%2fpackage.json', '/assets/.hidden.js', '/assets/index.html']) {
      expect((await fetch(served.base + probe)).status, probe).toBe(404);
    }
    await page.screenshot({ path: join(shots, '01-sign-in.png') });
    await page.getByLabel('User name').fill('creator1');
    await page.getByLabel('Password').fill('not the password');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await expect(page.getByRole('alert').textContent()).resolves.toContain('wrong user name or password');
    await page.close();
  });

  it('a creator signs in, generates on the golden model with Ctrl+Enter, sees progress and a preview, then the image and its PNG info', async () => {
    page = await signIn(creator, 'creator1');
    await expect(page.getByTestId('whoami').textContent()).resolves.toContain('user:creator1');
    // Admin pages are not offered to a creator.
    await expect(page.getByRole('link', { name: 'Monitoring' }).count()).resolves.toBe(0);
    const tab = txt2img(page);
    await expect(tab.getByTestId('intensity-cap').textContent()).resolves.toBe('Your cap: 2 (creator)');
    // The sampler list comes from the server (the pipeline's samplers).
    const samplers = await tab.getByLabel('Sampler').locator('option').allTextContents();
    expect(samplers).toContain('Euler a');
    expect(samplers).toContain('DPM++ 2M Karras');

    // Markup in a prompt must come back as text, never as elements.
    const prompt = 'a red cube <b>on</b> a grey table';
    await fillSettings(page, prompt, { seed: SEED });
    await tab.getByLabel(/Requested intensity/).focus();
    await page.keyboard.press('Home');
    await tab.getByLabel('Prompt', { exact: true }).focus();
    await page.keyboard.press('Control+Enter');

    // Live progress over SSE, with the cheap latent preview.
    await page.getByTestId('progress-text').filter({ hasText: new RegExp(`step [1-9]\\d* / ${STEPS}`) }).waitFor({ timeout: 60_000 });
    await page.getByTestId('preview').waitFor({ timeout: 30_000 });
    await expect(page.getByRole('button', { name: 'Cancel' }).isEnabled()).resolves.toBe(true);
    await page.screenshot({ path: join(shots, '02-txt2img-progress.png') });

    const card = tab.getByTestId('image-card');
    await card.waitFor({ timeout: 60_000 });
    await expect(tab.getByTestId('job-state').textContent()).resolves.toBe('succeeded');
    await expect(card.getByTestId('provenance').textContent()).resolves.toContain('C2PA signed');
    await page.screenshot({ path: join(shots, '03-txt2img-result.png') });

    // The image shown is the pipeline's output for these settings: same pixels as the
    // golden model run here in-process (provenance marks change metadata, not pixels).
    const src = await card.locator('img').getAttribute('src');
    const shown = Buffer.from(src!.replace(/^data:image\/png;base64,/, ''), 'base64');
    const shownRaw = await sharp(shown).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    expect([shownRaw.info.width, shownRaw.info.height]).toEqual([SIZE, SIZE]);
    const model = await StableDiffusionModel.load(goldenPath('models', 'diffusers'), { threads: 1 });
    try {
      const [ref] = await new Generator(model).generate(resolveRequest({
        prompt, negativePrompt: 'blurry', sampler: 'Euler a', steps: STEPS, cfgScale: 7, seed: SEED, width: SIZE, height: SIZE,
      }));
      expect(Buffer.compare(Buffer.from(ref!.image.data), shownRaw.data)).toBe(0);
    } finally {
      await model.release();
    }

    // PNG info: the infotext, as text.
    await card.getByRole('button', { name: 'PNG info' }).click();
    const dialog = page.getByRole('dialog');
    await dialog.waitFor();
    const infotext = await dialog.getByTestId('infotext').textContent();
    expect(infotext).toContain(prompt);
    expect(infotext).toContain(`Steps: ${STEPS}, Sampler: Euler a`);
    expect(infotext).toContain(`Seed: ${SEED}, Size: ${SIZE}x${SIZE}`);
    expect(infotext).toContain('Negative prompt: blurry');
    await expect(dialog.locator('b').count()).resolves.toBe(0);
    await page.screenshot({ path: join(shots, '04-png-info.png') });
    await page.keyboard.press('Escape');
    await expect(dialog.isVisible()).resolves.toBe(false);

    // Seed controls: random, then reuse the last image's seed.
    await tab.getByRole('button', { name: 'Random' }).click();
    await expect(tab.getByLabel('Seed (-1 = random)').inputValue()).resolves.toBe('-1');
    await tab.getByRole('button', { name: 'Reuse last seed' }).click();
    await expect(tab.getByLabel('Seed (-1 = random)').inputValue()).resolves.toBe(String(SEED));
    expect(consoleErrors.get(page)).toEqual([]);
  });

  it('an intensity above the caller\'s cap is lowered by the server and the studio says so; the adapter runs at the capped level', async () => {
    const tab = txt2img(page);
    await fillSettings(page, 'a grey sphere, studio lighting', { seed: 77 });
    await tab.getByLabel('Adapter', { exact: true }).selectOption(lora.name);
    await tab.getByLabel('Strength', { exact: true }).fill('1');
    await tab.getByRole('button', { name: 'Add adapter' }).click();
    await expect(tab.getByRole('list', { name: 'Adapters in use' }).textContent()).resolves.toContain(lora.name);
    const slider = tab.getByLabel(/Requested intensity/);
    await slider.focus();
    await page.keyboard.press('End');
    await expect(slider.inputValue()).resolves.toBe('3');
    await expect(tab.getByTestId('over-cap').textContent()).resolves.toContain('lower it to 2');
    await tab.getByRole('button', { name: 'Generate' }).click();

    const clamp = tab.getByTestId('clamp-notice');
    await clamp.waitFor();
    const text = await clamp.textContent();
    expect(text).toContain('you asked for 3');
    expect(text).toContain('generated at 2');
    expect(text).toContain('the limit for your role');
    await tab.getByTestId('job-state').filter({ hasText: /succeeded|failed|cancelled/ }).waitFor({ timeout: 60_000 });
    await page.screenshot({ path: join(shots, '05-intensity-clamped.png') });
    await expect(tab.getByTestId('job-state').textContent()).resolves.toBe('succeeded');
    await tab.getByTestId('image-card').first().getByRole('button', { name: 'PNG info' }).click();
    const infotext = await page.getByRole('dialog').getByTestId('infotext').textContent();
    expect(infotext).toContain('Intensity: 2');
    expect(infotext).toContain(`<lora:${lora.name}:1>`);
    await page.keyboard.press('Escape');
  });

  it('img2img takes an uploaded init image and a denoising strength', async () => {
    await page.getByRole('link', { name: 'img2img' }).click();
    const tab = page.getByRole('region', { name: 'img2img' });
    // A procedural gradient as the init image.
    const px = Buffer.alloc(SIZE * SIZE * 3);
    for (let i = 0; i < SIZE * SIZE; i++) { px[i * 3] = (i % SIZE) * 4; px[i * 3 + 1] = Math.floor(i / SIZE) * 4; px[i * 3 + 2] = 128; }
    const init = join(dataDir, 'init.png');
    writeFileSync(init, await sharp(px, { raw: { width: SIZE, height: SIZE, channels: 3 } }).png().toBuffer());
    await tab.getByLabel('Image file (PNG, JPEG or WebP)').setInputFiles(init);
    await tab.getByRole('img', { name: /Init image/ }).waitFor();
    await tab.getByLabel('Prompt', { exact: true }).fill('a blue gradient');
    await tab.getByLabel('Width', { exact: true }).fill(String(SIZE));
    await tab.getByLabel('Height', { exact: true }).fill(String(SIZE));
    await tab.getByLabel('Sampling steps').fill('10');
    await tab.getByLabel(/Denoising strength/).fill('0.6');
    await tab.getByRole('button', { name: 'Generate' }).click();
    await tab.getByTestId('image-card').waitFor({ timeout: 60_000 });
    await tab.getByRole('button', { name: 'PNG info' }).click();
    const infotext = await page.getByRole('dialog').getByTestId('infotext').textContent();
    expect(infotext).toContain('Denoising strength: 0.6');
    await page.screenshot({ path: join(shots, '06-img2img.png') });
    await page.keyboard.press('Escape');
  });

  it('Cancel stops a running job and the studio shows it cancelled', async () => {
    await page.getByRole('link', { name: 'txt2img' }).click();
    const tab = txt2img(page);
    await fillSettings(page, 'a slow green cone');
    await tab.getByLabel('Sampling steps').fill('60');
    await tab.getByRole('list', { name: 'Adapters in use' }).getByRole('button', { name: /^Remove adapter/ }).click();
    await tab.getByRole('button', { name: 'Generate' }).click();
    await tab.getByTestId('progress-text').filter({ hasText: /step [1-9]\d* \/ 60/ }).waitFor({ timeout: 60_000 });
    await tab.getByRole('button', { name: 'Cancel' }).click();
    await tab.getByTestId('job-state').filter({ hasText: 'cancelled' }).waitFor({ timeout: 30_000 });
    await expect(tab.getByTestId('image-card').count()).resolves.toBe(0);
    await expect(tab.getByRole('button', { name: 'Generate' }).isEnabled()).resolves.toBe(true);
  });

  it('a refused request shows the server\'s reason, and the gallery lists the images with provenance', async () => {
    await page.getByRole('link', { name: 'txt2img' }).click();
    const tab = txt2img(page);
    await tab.getByLabel('Prompt', { exact: true }).fill(`portrait of ${PROTECTED_NAME} with a bleeding wound, horror concept art`);
    await tab.getByRole('button', { name: 'Generate' }).click();
    const alert = tab.getByRole('alert');
    await alert.waitFor();
    await expect(alert.textContent()).resolves.toContain('real, identifiable people');
    await alert.screenshot({ path: join(shots, '07-refused.png') });

    await page.getByRole('link', { name: 'Gallery' }).click();
    const gallery = page.getByRole('region', { name: 'Gallery' });
    await gallery.getByTestId('image-card').first().waitFor();
    // Three jobs (txt2img, clamped txt2img, img2img), one image each, all marked.
    await expect(gallery.getByTestId('image-card').count()).resolves.toBe(3);
    for (const p of await gallery.getByTestId('provenance').allTextContents()) expect(p).toContain('C2PA signed');
    await expect(gallery.getByRole('heading', { level: 3 }).allTextContents()).resolves.toContainEqual(expect.stringContaining('lowered from 3'));
    await page.screenshot({ path: join(shots, '08-gallery.png'), fullPage: true });

    // A1111's "Send to img2img": the image becomes the init image there.
    const oldest = gallery.getByTestId('image-card').last();
    const oldestSrc = await oldest.locator('img').getAttribute('src');
    await oldest.getByRole('button', { name: 'Send to img2img' }).click();
    const img2img = page.getByRole('region', { name: 'img2img' });
    await expect(img2img.getByRole('img', { name: 'Init image: image sent from a result' }).getAttribute('src')).resolves.toBe(oldestSrc);
  });
});

describe('admin pages in Chromium', () => {
  let admin: BrowserContext;
  let page: Page;

  beforeAll(async () => {
    admin = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
    page = await signIn(admin, 'admin1');
  });
  afterAll(async () => {
    await admin?.close();
  });

  it('monitoring shows the creator\'s block by category and reason, the top blocked callers and the queue depth', async () => {
    await page.getByRole('link', { name: 'Monitoring' }).click();
    const byCategory = page.getByTestId('blocks-by-category');
    await byCategory.getByRole('row').filter({ hasText: 'real_person_graded' }).waitFor();
    await expect(byCategory.getByRole('row').filter({ hasText: 'real_person_graded' }).textContent()).resolves.toMatch(/real_person_graded\s*1/);
    await expect(page.getByTestId('blocks-by-reason').textContent()).resolves.toContain('prompt: This request can');
    await expect(page.getByTestId('top-blocked').getByRole('row').filter({ hasText: 'user:creator1' }).textContent()).resolves.toMatch(/user:creator1\s*creator\s*1/);
    await expect(page.getByTestId('queue-depth').textContent()).resolves.toMatch(/^0\s*jobs waiting/);
    await expect(page.getByTestId('jobs-by-state').getByRole('row').filter({ hasText: 'succeeded' }).textContent()).resolves.toMatch(/succeeded\s*3/);
    await expect(page.getByTestId('jobs-by-state').getByRole('row').filter({ hasText: 'cancelled' }).textContent()).resolves.toMatch(/cancelled\s*1/);
    await page.screenshot({ path: join(shots, '09-monitoring.png'), fullPage: true });
  });

  it('users and keys: a key created in the studio works, and stops working once revoked', async () => {
    await page.getByRole('link', { name: 'Users & keys' }).click();
    await page.getByRole('cell', { name: 'creator1', exact: true }).waitFor();
    const form = page.getByRole('form', { name: 'Create API key' });
    await form.getByLabel('Key name').fill('<script>ci</script> key');
    await form.getByLabel('Role').selectOption('studio');
    await form.getByRole('button', { name: 'Create key' }).click();
    const key = await page.getByTestId('new-key').textContent();
    expect(key).toMatch(/^rl_/);
    const me = await fetch(`${served.base}/api/v1/me`, { headers: { authorization: `Bearer ${key}` } });
    expect(((await me.json()) as { role: string }).role).toBe('studio');
    // The key's name is shown as text.
    const row = page.getByRole('row').filter({ hasText: '<script>ci</script> key' });
    await row.waitFor();
    await page.screenshot({ path: join(shots, '10-users-keys.png'), fullPage: true });
    await row.getByRole('button', { name: /^Revoke key/ }).click();
    await row.filter({ hasText: 'revoked' }).waitFor();
    const after = await fetch(`${served.base}/api/v1/me`, { headers: { authorization: `Bearer ${key}` } });
    expect(after.status).toBe(401);
  });

  it('audit and policy pages show what the server offers, or its reason when it offers nothing', async () => {
    await page.getByRole('link', { name: 'Audit' }).click();
    const audit = page.getByRole('region', { name: 'Audit log' });
    // Either entries (an audit sink with search) or the server's own explanation.
    await audit.locator('table, [role=alert]').first().waitFor();
    const api = await page.request.get(`${served.base}/api/v1/admin/audit?limit=5`);
    if (api.status() === 501) {
      await expect(audit.getByRole('alert').textContent()).resolves.toBe(((await api.json()) as { error: { message: string } }).error.message);
    } else {
      expect(api.status()).toBe(200);
      await expect(audit.getByRole('row').count()).resolves.toBeGreaterThan(1);
    }
    await page.screenshot({ path: join(shots, '11-audit.png') });
    await page.getByRole('link', { name: 'Policy' }).click();
    await expect(page.getByRole('region', { name: 'Policy' }).textContent()).resolves.toContain('intensity cap 3');
    await page.screenshot({ path: join(shots, '12-policy.png') });
  });
});

describe('the Hires. fix section in Chromium', () => {
  let context: BrowserContext;
  beforeAll(async () => {
    context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  });
  afterAll(async () => {
    await context?.close();
  });

  it('sends the hires settings, prompts and sampler as the native API\'s hires object and shows the second pass\'s image at its size', async () => {
    const page = await signIn(context, 'creator1');
    const tab = txt2img(page);
    await fillSettings(page, 'a red cube on a grey table', { seed: 99 });
    await tab.getByLabel('Sampling steps').fill('2');
    await tab.getByLabel(/Upscale and refine/).check();
    await tab.getByLabel('Upscaler').selectOption('Latent (nearest)');
    // The target size is shown beside the factor.
    await expect(tab.getByLabel(/^Upscale by/).count()).resolves.toBe(1);
    await expect(tab.locator('label', { hasText: /^Upscale by/ }).textContent()).resolves.toBe(`Upscale by (${2 * SIZE}x${2 * SIZE})`);
    await tab.getByLabel('Hires steps (0 = same)').fill('1');
    // "Use same sampler" first, then the server's samplers.
    const choices = await tab.getByLabel('Hires sampler').locator('option').allTextContents();
    expect(choices.slice(0, 2)).toEqual(['Use same sampler', 'DDIM']);
    await tab.getByLabel('Hires sampler').selectOption('Euler');
    await tab.getByLabel('Hires prompt (empty = the prompt)').fill('a blue cube on a grey table');
    await tab.getByLabel('Hires negative prompt (empty = the negative prompt)').fill('fog');

    const sent = page.waitForRequest((r) => r.method() === 'POST' && new URL(r.url()).pathname === '/api/v1/jobs');
    await tab.getByRole('button', { name: 'Generate' }).click();
    expect(((await sent).postDataJSON() as { hires: unknown }).hires).toEqual({
      scale: 2, upscaler: 'Latent (nearest)', second_pass_steps: 1, denoising_strength: 0.7,
      prompt: 'a blue cube on a grey table', negative_prompt: 'fog', sampler_name: 'Euler',
    });

    const card = tab.getByTestId('image-card');
    await card.getByTestId('image-size').waitFor({ timeout: 60_000 });
    await expect(card.getByTestId('image-size').textContent()).resolves.toBe(`${2 * SIZE}x${2 * SIZE}`);
    await page.screenshot({ path: join(shots, '09-hires-result.png') });
    await card.getByRole('button', { name: 'PNG info' }).click();
    const infotext = await page.getByRole('dialog').getByTestId('infotext').textContent();
    // Size is the first pass's, as A1111 writes it; the hires entries in its order.
    expect(infotext).toContain(`Size: ${SIZE}x${SIZE}`);
    expect(infotext).toContain('Denoising strength: 0.7, Hires sampler: Euler, Hires prompt: a blue cube on a grey table, Hires negative prompt: fog, Hires upscale: 2, Hires steps: 1, Hires upscaler: Latent (nearest)');
    await page.keyboard.press('Escape');

    // The pixels are the pipeline's for these settings, run here in-process.
    const src = await card.locator('img').getAttribute('src');
    const shown = await sharp(Buffer.from(src!.replace(/^data:image\/png;base64,/, ''), 'base64')).removeAlpha().raw().toBuffer();
    const model = await StableDiffusionModel.load(goldenPath('models', 'diffusers'), { threads: 1 });
    try {
      const [ref] = await new Generator(model).generate(resolveRequest({
        prompt: 'a red cube on a grey table', negativePrompt: 'blurry', sampler: 'Euler a', steps: 2, cfgScale: 7, seed: 99, width: SIZE, height: SIZE,
        hires: { scale: 2, upscaler: 'Latent (nearest)', steps: 1, denoise: 0.7, prompt: 'a blue cube on a grey table', negativePrompt: 'fog', sampler: 'Euler' },
      }));
      expect(Buffer.compare(Buffer.from(ref!.image.data), shown)).toBe(0);
    } finally {
      await model.release();
    }
    expect(consoleErrors.get(page)).toEqual([]);
    await page.close();
  }, 120_000);
});
