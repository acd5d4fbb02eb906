import { rmSync } from 'node:fs';
import sharp from 'sharp';
import { ServiceStore } from '../../src/service/store.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { builtinRoles } from '../../src/service/roles.ts';
import { bearer, postJson, readSse, startHarness, waitForJob, type Harness } from './support/harness.ts';
import { OUTPUT_BLOCK_MARKER, REFUSED_MARKER } from './support/procedural-components.ts';

const small = { width: 64, height: 64, steps: 6 };

describe('service API on loopback', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ backend: { stepMs: 5, previewEvery: 2 } });
  });
  afterAll(async () => h.close());

  it('answers health without credentials and nothing else', async () => {
    const health = await fetch(`${h.base}/api/v1/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok', queue: 'embedded', output_checks: true });

    const guarded = h.server.routes.filter((r) => !r.public);
    expect(guarded.length).toBeGreaterThan(25);
    for (const r of guarded) {
      const url = h.base + r.url.replace(':idx', '0').replace(/:[a-z]+/g, 'x');
      const init: RequestInit = { method: r.method, headers: { 'content-type': 'application/json' } };
      if (!['GET', 'DELETE'].includes(r.method)) init.body = '{}';
      const res = await fetch(url, init);
      expect(res.status, `${r.method} ${r.url}`).toBe(401);
      expect(res.headers.get('www-authenticate')).toMatch(/Basic/);
    }
    // Only health, session sign-in and the studio shell with its static files are public.
    expect(h.server.routes.filter((r) => r.public).map((r) => `${r.method} ${r.url}`).sort()).toEqual(['GET /', 'GET /api/v1/health', 'GET /assets/:name', 'POST /api/v1/session']);
  });

  it('rejects a mistyped key by its checksum and a revoked key', async () => {
    const key = h.keys.creator;
    const typo = key.slice(0, 20) + (key[20] === 'a' ? 'b' : 'a') + key.slice(21);
    const r1 = await fetch(`${h.base}/api/v1/me`, { headers: bearer(typo) });
    expect(r1.status).toBe(401);
    expect(((await r1.json()) as { error: { message: string } }).error.message).toMatch(/checksum/);

    const { key: temp, row } = h.server.ctx.store.createKey('creator', 'temp');
    expect((await fetch(`${h.base}/api/v1/me`, { headers: bearer(temp) })).status).toBe(200);
    const revoke = await fetch(`${h.base}/api/v1/admin/keys/${row.id}/revoke`, { method: 'POST', headers: bearer(h.keys.admin) });
    expect(revoke.status).toBe(200);
    const r2 = await fetch(`${h.base}/api/v1/me`, { headers: bearer(temp) });
    expect(r2.status).toBe(401);
    expect(await r2.text()).toMatch(/revoked/);
  });

  it('accepts the key as an HTTP Basic password, as A1111 --api-auth clients send it', async () => {
    const basic = 'Basic ' + Buffer.from(`anyone:${h.keys.studio}`).toString('base64');
    const r = await fetch(`${h.base}/api/v1/me`, { headers: { authorization: basic } });
    expect(await r.json()).toMatchObject({ role: 'studio', intensity_cap: 3 });
  });

  it('runs a native txt2img job with SSE progress, preview and a PNG result with infotext', async () => {
    const submit = await postJson(`${h.base}/api/v1/jobs`, { prompt: 'a red cube on grey', seed: 1234, ...small }, bearer(h.keys.creator));
    expect(submit.status).toBe(202);
    const job = (await submit.json()) as { id: string; links: { events: string } };
    const events = await readSse(h.base + job.links.events, bearer(h.keys.creator));
    const progress = events.filter((e) => e.event === 'progress');
    const done = events.at(-1)!;
    expect(done.event).toBe('done');
    expect(done.data.state).toBe('succeeded');
    // A client may connect after the first steps ran; what it sees must still be ordered.
    expect(progress.map((e) => e.data.step)).toEqual([...progress.map((e) => e.data.step as number)].sort((a, b) => a - b));
    expect(progress.at(-1)!.data).toMatchObject({ step: 6, total: 6 });
    expect(progress.some((e) => typeof e.data.preview === 'string')).toBe(true);

    const result = (await (await fetch(`${h.base}/api/v1/jobs/${job.id}/result`, { headers: bearer(h.keys.creator) })).json()) as {
      images: { png_base64: string; infotext: string; seed: number; url: string; provenance: { status: string } }[];
    };
    expect(result.images).toHaveLength(1);
    const meta = await sharp(Buffer.from(result.images[0]!.png_base64, 'base64')).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 64, 64]);
    expect(result.images[0]!.seed).toBe(1234);
    expect(result.images[0]!.infotext).toMatch(/Steps: 6, Sampler: Euler a, CFG scale: 7, Seed: 1234, Size: 64x64/);
    expect(result.images[0]!.provenance.status).toMatch(/unmarked/);
    const png = await fetch(h.base + result.images[0]!.url, { headers: bearer(h.keys.creator) });
    expect(png.headers.get('content-type')).toBe('image/png');

    // Another caller cannot see the job at all.
    expect((await fetch(`${h.base}/api/v1/jobs/${job.id}`, { headers: bearer(h.keys.studio) })).status).toBe(404);
  });

  it('takes the intensity cap from the key\'s role, whatever the request claims', async () => {
    // Fields that try to claim a role or privileges are not part of the schema: refused.
    const tampered = await postJson(`${h.base}/api/v1/jobs`, { prompt: 'x', role: 'admin', intensity: 3, ...small }, bearer(h.keys.creator));
    expect(tampered.status).toBe(422);

    const before = h.components.backend.requests.length;
    const r = await postJson(`${h.base}/api/v1/jobs`, { prompt: 'stage makeup wound', intensity: 3, ...small }, bearer(h.keys.creator));
    expect(r.status).toBe(202);
    const job = (await r.json()) as { id: string; intensity: { requested: number; effective: number; verdict: string } };
    expect(job.intensity).toMatchObject({ requested: 3, effective: builtinRoles.creator!.maxIntensity, verdict: 'clamp' });
    await waitForJob(h.base, h.keys.creator, job.id);
    const seen = h.components.backend.requests.slice(before);
    expect(seen.map((q) => q.intensity)).toEqual([1]);
    // The screener was told the server-side role and cap, not anything from the body.
    expect(h.components.screener.inputs.at(-1)).toMatchObject({ role: 'creator', roleCap: 1, requestedIntensity: 3 });

    // A1111 route: extra top-level fields are ignored as A1111 does, the cap still holds.
    const a = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: 'stage makeup wound', intensity: 3, role: 'admin', is_admin: true, ...small }, bearer(h.keys.creator));
    expect(a.status).toBe(200);
    const info = JSON.parse(((await a.json()) as { info: string }).info) as { redline: { intensity: { effective: number } } };
    expect(info.redline.intensity.effective).toBe(1);
    expect(h.components.backend.requests.at(-1)!.intensity).toBe(1);

    // A studio key gets the full range.
    const s = await postJson(`${h.base}/api/v1/jobs`, { prompt: 'stage makeup wound', intensity: 3, ...small }, bearer(h.keys.studio));
    expect(((await s.json()) as { intensity: { effective: number } }).intensity.effective).toBe(3);
  });

  it('enforces role capabilities: viewers cannot generate, only admins administer, model switch needs the right', async () => {
    const v = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: 'x', ...small }, bearer(h.keys.viewer));
    expect(v.status).toBe(403);
    expect(await v.json()).toMatchObject({ error: 'RequestRefused' });
    expect((await fetch(`${h.base}/api/v1/admin/keys`, { headers: bearer(h.keys.studio) })).status).toBe(403);
    expect((await fetch(`${h.base}/metrics`, { headers: bearer(h.keys.creator) })).status).toBe(403);
    const sw = await postJson(`${h.base}/sdapi/v1/options`, { sd_model_checkpoint: 'procedural-b' }, bearer(h.keys.creator));
    expect(sw.status).toBe(403);
    const big = await postJson(`${h.base}/api/v1/jobs`, { prompt: 'x', width: 1024, height: 1024, steps: 4 }, bearer(h.keys.creator));
    expect(big.status).toBe(403);
    expect(await big.text()).toMatch(/pixel limit of role 'creator'/);
  });

  it('refuses a screened prompt with the reason, records the block, and shows it to admins and in metrics', async () => {
    const r = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: `a ${REFUSED_MARKER} scene`, ...small }, bearer(h.keys.creator));
    expect(r.status).toBe(403);
    const body = (await r.json()) as Record<string, string>;
    // A1111's HTTPException fields, and the request id operators find the refusal's audit rows by.
    expect(Object.keys(body).sort()).toEqual(['body', 'detail', 'error', 'errors', 'request_id']);
    expect(r.headers.get('x-request-id')).toBe(body.request_id);
    expect(body.detail).toBe('This request falls in a category this server does not generate.');

    const blocks = (await (await fetch(`${h.base}/api/v1/admin/blocks`, { headers: bearer(h.keys.admin) })).json()) as { blocks: { caller: string; stage: string; categories: string[] }[]; by_category: Record<string, number> };
    const creatorId = `key:${h.keys.creator.slice(3, 15)}`;
    expect(blocks.blocks[0]).toMatchObject({ caller: creatorId, stage: 'prompt', categories: ['test_hard_block'] });
    const top = (await (await fetch(`${h.base}/api/v1/admin/blocks/top-callers`, { headers: bearer(h.keys.admin) })).json()) as { callers: { caller: string; blocks: number }[] };
    expect(top.callers[0]).toMatchObject({ caller: creatorId });
    const metrics = await (await fetch(`${h.base}/metrics`, { headers: bearer(h.keys.admin) })).text();
    expect(metrics).toMatch(/redline_blocks_total\{stage="prompt",category="test_hard_block",reason="refused"\} [1-9]/);
    expect(metrics).toMatch(/redline_intensity_total\{requested="3",effective="1",verdict="clamp"\} [1-9]/);
    expect(metrics).toMatch(/redline_jobs\{state="succeeded"\} [1-9]/);
    expect(metrics).toMatch(/redline_unet_step_seconds_count [1-9]/);
    expect(metrics).toMatch(/redline_http_request_duration_seconds_bucket/);
    // No audit log installed in this harness: the route says so instead of pretending.
    expect((await fetch(`${h.base}/api/v1/admin/audit`, { headers: bearer(h.keys.admin) })).status).toBe(501);
  });

  it('drops images the output checker blocks and tells the caller why', async () => {
    const r = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: `grey ${OUTPUT_BLOCK_MARKER}`, ...small }, bearer(h.keys.creator));
    expect(r.status).toBe(403);
    expect(((await r.json()) as { detail: string }).detail).toBe('The image did not pass the output check.');
    const blocks = (await (await fetch(`${h.base}/api/v1/admin/blocks`, { headers: bearer(h.keys.admin) })).json()) as { blocks: { stage: string; job_id: string }[] };
    expect(blocks.blocks[0]!.stage).toBe('output');
    expect(h.server.ctx.store.jobImages(blocks.blocks[0]!.job_id)).toHaveLength(0);
  });

  it('cancels a running job', async () => {
    const r = await postJson(`${h.base}/api/v1/jobs`, { prompt: 'slow', width: 64, height: 64, steps: 150 }, bearer(h.keys.studio));
    const job = (await r.json()) as { id: string };
    for (let i = 0; i < 200 && h.server.ctx.store.getJob(job.id)!.progress_step < 2; i++) await new Promise((res) => setTimeout(res, 10));
    const c = await fetch(`${h.base}/api/v1/jobs/${job.id}/cancel`, { method: 'POST', headers: bearer(h.keys.studio) });
    expect(c.status).toBe(202);
    const final = await waitForJob(h.base, h.keys.studio, job.id);
    expect(final.state).toBe('cancelled');
    expect((final.progress as { step: number }).step).toBeLessThan(150);
  });

  it('serves an OpenAPI document covering both APIs', async () => {
    const doc = (await (await fetch(`${h.base}/openapi.json`, { headers: bearer(h.keys.viewer) })).json()) as { openapi: string; paths: Record<string, unknown> };
    expect(doc.openapi).toBe('3.1.0');
    for (const p of ['/api/v1/jobs', '/api/v1/jobs/{id}/events', '/sdapi/v1/txt2img', '/sdapi/v1/img2img', '/sdapi/v1/progress', '/api/v1/admin/keys']) {
      expect(Object.keys(doc.paths)).toContain(p);
    }
  });

  it('sends security headers and no CORS grant to other origins', async () => {
    const r = await fetch(`${h.base}/api/v1/health`, { headers: { origin: 'https://evil.example' } });
    expect(r.headers.get('content-security-policy')).toMatch(/frame-ancestors 'none'/);
    expect(r.headers.get('x-content-type-options')).toBe('nosniff');
    expect(r.headers.get('access-control-allow-origin')).toBeNull();
    const pre = await fetch(`${h.base}/api/v1/jobs`, { method: 'OPTIONS', headers: { origin: 'https://evil.example', 'access-control-request-method': 'POST' } });
    expect(pre.headers.get('access-control-allow-origin')).toBeNull();
  });
});

describe('CORS when the operator opens it', () => {
  it('grants only the configured origin, preflight included', async () => {
    const h = await startHarness({ server: { corsOrigins: ['https://studio.example'] } });
    try {
      const pre = await fetch(`${h.base}/api/v1/jobs`, { method: 'OPTIONS', headers: { origin: 'https://studio.example', 'access-control-request-method': 'POST' } });
      expect(pre.status).toBe(204);
      expect(pre.headers.get('access-control-allow-origin')).toBe('https://studio.example');
      expect(pre.headers.get('access-control-allow-headers')).toMatch(/authorization/);
      const other = await fetch(`${h.base}/api/v1/me`, { headers: { origin: 'https://other.example', ...bearer(h.keys.viewer) } });
      expect(other.headers.get('access-control-allow-origin')).toBeNull();
    } finally {
      await h.close();
    }
  });
});

describe('web studio session', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness();
    await h.server.ctx.store.createUser('ada', 'correct horse battery', 'creator');
  });
  afterAll(async () => h.close());

  it('signs in with an httpOnly SameSite=Strict cookie and needs the CSRF token to change state', async () => {
    const bad = await postJson(`${h.base}/api/v1/session`, { username: 'ada', password: 'wrong password!' });
    expect(bad.status).toBe(401);
    const login = await postJson(`${h.base}/api/v1/session`, { username: 'ada', password: 'correct horse battery' });
    expect(login.status).toBe(200);
    const setCookie = login.headers.get('set-cookie')!;
    expect(setCookie).toMatch(/HttpOnly/i);
    expect(setCookie).toMatch(/SameSite=Strict/i);
    const { csrf_token, intensity_cap } = (await login.json()) as { csrf_token: string; intensity_cap: number };
    expect(intensity_cap).toBe(1);
    const cookie = setCookie.split(';')[0]!;

    expect(await (await fetch(`${h.base}/api/v1/me`, { headers: { cookie } })).json()).toMatchObject({ caller: 'user:ada', via: 'session' });
    const noCsrf = await postJson(`${h.base}/api/v1/jobs`, { prompt: 'x', width: 64, height: 64, steps: 2 }, { cookie });
    expect(noCsrf.status).toBe(403);
    expect(await noCsrf.text()).toMatch(/x-csrf-token/);
    const withCsrf = await postJson(`${h.base}/api/v1/jobs`, { prompt: 'x', width: 64, height: 64, steps: 2 }, { cookie, 'x-csrf-token': csrf_token });
    expect(withCsrf.status).toBe(202);

    await fetch(`${h.base}/api/v1/session`, { method: 'DELETE', headers: { cookie, 'x-csrf-token': csrf_token } });
    expect((await fetch(`${h.base}/api/v1/me`, { headers: { cookie } })).status).toBe(401);
  });

  it('slows down password guessing', async () => {
    const fresh = await startHarness();
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 12; i++) statuses.push((await postJson(`${fresh.base}/api/v1/session`, { username: 'grace', password: `guess number ${i}` })).status);
      expect(statuses).toEqual([...Array(10).fill(401), 429, 429]);
    } finally {
      await fresh.close();
    }
  });
});

describe('rate limits', () => {
  let h: Harness;
  beforeAll(async () => {
    // A creator with a bucket of 2 cost units refilling at 1 unit per 100 s.
    h = await startHarness({ roles: { ...builtinRoles, creator: { ...builtinRoles.creator!, rate: { capacity: 2, refillPerSecond: 0.01 } } } });
  });
  afterAll(async () => h.close());

  it('charges by steps x pixels x batch and answers 429 with Retry-After and RateLimit headers', async () => {
    // 512x512 x 20 steps x 1 image = 1 unit.
    const one = { prompt: 'x', width: 512, height: 512, steps: 20 };
    const r1 = await postJson(`${h.base}/api/v1/jobs`, one, bearer(h.keys.creator));
    expect(r1.status).toBe(202);
    expect(r1.headers.get('ratelimit-policy')).toBe('"cost";q=2;w=200');
    expect(r1.headers.get('ratelimit')).toMatch(/^"cost";r=1;t=\d+$/);
    // batch_size 2 costs 2 units; only ~1 is left.
    const r2 = await postJson(`${h.base}/api/v1/jobs`, { ...one, batch_size: 2 }, bearer(h.keys.creator));
    expect(r2.status).toBe(429);
    const retry = Number(r2.headers.get('retry-after'));
    expect(retry).toBeGreaterThanOrEqual(99);
    expect(retry).toBeLessThanOrEqual(101);
    // One unit is left: not enough for this request, which is what t says.
    expect(r2.headers.get('ratelimit')).toBe(`"cost";r=1;t=${retry}`);
    expect(r2.headers.get('ratelimit-policy')).toBe('"cost";q=2;w=200');
    // The same key fits a cheaper request, and other keys have their own buckets.
    expect((await postJson(`${h.base}/api/v1/jobs`, { ...one, steps: 10 }, bearer(h.keys.creator))).status).toBe(202);
    expect((await postJson(`${h.base}/api/v1/jobs`, { ...one, batch_size: 2 }, bearer(h.keys.studio))).status).toBe(202);
    // A1111 route, same bucket, A1111 error body.
    const a = await postJson(`${h.base}/sdapi/v1/txt2img`, { ...one }, bearer(h.keys.creator));
    expect(a.status).toBe(429);
    expect(await a.json()).toMatchObject({ error: 'RateLimited' });
  });
});

describe('shutdown and responsiveness', () => {
  it('keeps answering while a job runs, and on stop answers waiting clients and keeps the job queued', async () => {
    const h = await startHarness({ backend: { stepMs: 20 } });
    const key = bearer(h.keys.studio);
    const pending = postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: 'long', width: 64, height: 64, steps: 150 }, key);
    let running: { id: string } | undefined;
    for (let i = 0; i < 200 && !running; i++) {
      running = h.server.ctx.store.listJobs({ state: 'running', limit: 1 })[0];
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(running).toBeDefined();
    const sse = fetch(`${h.base}/api/v1/jobs/${running!.id}/events`, { headers: key }).then((r) => r.text());
    // The event loop is free while the job runs: other requests are answered meanwhile.
    for (let i = 0; i < 5; i++) expect((await fetch(`${h.base}/api/v1/health`)).status).toBe(200);
    expect(h.server.ctx.store.getJob(running!.id)!.state).toBe('running');

    const dataDir = h.dataDir;
    await h.server.close();
    const res = await pending;
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ error: 'ServiceUnavailable', detail: expect.stringContaining('runs after restart') });
    await sse; // the stream was ended, not left hanging
    const store = new ServiceStore(dataDir);
    // A clean stop puts the job back without using up its retry.
    expect(store.getJob(running!.id)).toMatchObject({ state: 'queued', attempts: 0 });
    store.close();
    rmSync(dataDir, { recursive: true, force: true });
  });
});
