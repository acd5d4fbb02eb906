// From a refused or clamped request, or a returned image, to its screening evidence: the
// refusal response gives a request id (X-Request-Id, request_id) and a job's id is the same
// id; screening rows carry it, generation rows carry it and each image's SHA-256; the admin
// search and `redline audit search/export` filter by either.
import { createHash } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/safety/audit/audit-log.ts';
import { defaultPolicy } from '../../src/safety/policy/policy.ts';
import { bearer, postJson, startPolicyHarness, tempDir, waitForJob, type Harness } from './support/harness.ts';
import { runCli } from './support/processes.ts';

const REFUSED = 'a ch1ld covered in bl00d'; // a minor with injury wording
const CLAMPED = 'a zombie with a deep bleeeding w0und'; // level 3 wording; the creator cap is 2
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const cli = (...args: string[]) => runCli(args);

describe('request ids link refusals, jobs and images to their screening rows', () => {
  const dataDir = tempDir('audit-request-id');
  const dbPath = join(dataDir, 'audit.db');
  let log: AuditLog;
  let h: Harness;

  beforeAll(async () => {
    log = new AuditLog(dbPath);
    h = await startPolicyHarness({ policy: defaultPolicy(), log, dataDir });
  }, 60_000);
  afterAll(async () => {
    await h?.close();
    log?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('a native refusal answers with a request id (body and X-Request-Id) that finds its screening row and evidence', async () => {
    const res = await postJson(`${h.base}/api/v1/jobs`, { prompt: REFUSED, steps: 2, width: 64, height: 64 }, bearer(h.keys.creator));
    expect(res.status).toBe(403);
    const body = (await res.json()) as { error: { code: string; request_id: string } };
    expect(body.error.code).toBe('refused');
    expect(body.error.request_id).toMatch(UUID);
    expect(res.headers.get('x-request-id')).toBe(body.error.request_id);

    const rows = log.search({ requestId: body.error.request_id }).rows;
    expect(rows.map((r) => [r.kind, r.event.verdict, r.event.caller])).toEqual([['screen', 'refuse', h.callers.creator]]);
    const minors = rows[0]!.event.categories!.find((c) => c.category === 'minors_graded')!;
    expect(minors.evidence!.map((e) => e.text)).toEqual(expect.arrayContaining(['ch1ld', 'bl00d']));
    // No job was made with that id.
    expect(h.server.ctx.store.getJob(body.error.request_id)).toBeUndefined();

    const admin = await fetch(`${h.base}/api/v1/admin/audit?request_id=${body.error.request_id}`, { headers: bearer(h.keys.admin) });
    const found = (await admin.json()) as { entries: { seq: number; verdict: string; requestId: string }[] };
    expect(found.entries.map((e) => [e.seq, e.verdict, e.requestId])).toEqual([[rows[0]!.seq, 'refuse', body.error.request_id]]);
  });

  it('an A1111 refusal carries the id too, in its own error shape', async () => {
    const res = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: REFUSED, steps: 2, width: 64, height: 64 }, bearer(h.keys.creator));
    expect(res.status).toBe(403);
    const body = (await res.json()) as { error: string; request_id: string };
    expect(body.error).toBe('RequestRefused');
    expect(body.request_id).toMatch(UUID);
    expect(res.headers.get('x-request-id')).toBe(body.request_id);
    expect(log.search({ requestId: body.request_id }).rows.map((r) => r.event.verdict)).toEqual(['refuse']);
  });

  it('a request that is not screened (a bad size) gets no request id: the log has nothing for it', async () => {
    const res = await postJson(`${h.base}/api/v1/jobs`, { prompt: 'a lighthouse', steps: 2, width: 100, height: 64 }, bearer(h.keys.creator));
    expect(res.status).toBe(422);
    expect(res.headers.get('x-request-id')).toBeNull();
    expect(((await res.json()) as { error: Record<string, unknown> }).error).not.toHaveProperty('request_id');
  });

  it('a clamped native job: its id finds the screening row (clamp) and the generation row, which holds the image hash', async () => {
    const res = await postJson(`${h.base}/api/v1/jobs`, { prompt: CLAMPED, steps: 2, width: 64, height: 64, seed: 3 }, bearer(h.keys.creator));
    expect(res.status).toBe(202);
    const job = (await res.json()) as { id: string };
    expect(res.headers.get('x-request-id')).toBe(job.id);
    await waitForJob(h.base, h.keys.creator, job.id);
    const result = (await (await fetch(`${h.base}/api/v1/jobs/${job.id}/result`, { headers: bearer(h.keys.creator) })).json()) as { images: { png_base64: string }[] };
    const imageHash = createHash('sha256').update(Buffer.from(result.images[0]!.png_base64, 'base64')).digest('hex');

    const rows = log.search({ requestId: job.id }).rows.reverse();
    expect(rows.map((r) => [r.kind, r.event.requestId])).toEqual([['screen', job.id], ['generate', job.id]]);
    expect(rows[0]!.event).toMatchObject({ verdict: 'clamp', requestedIntensity: 3, effectiveIntensity: 2 });
    expect(rows[0]!.event.categories!.flatMap((c) => c.evidence!.map((e) => e.text))).toContain('bleeeding');
    expect(rows[1]!.event.outputs).toEqual([{ sha256: imageHash }]);
    expect(log.search({ output: imageHash }).rows.map((r) => r.seq)).toEqual([rows[1]!.seq]);
    expect(log.verify().ok).toBe(true);
  });

  it('an A1111 image leads to its request: X-Request-Id is the job id, the image hash finds the generation row; the CLI does the same', async () => {
    const res = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: CLAMPED, steps: 2, width: 64, height: 64, seed: 9 }, bearer(h.keys.creator));
    expect(res.status).toBe(200);
    const body = (await res.json()) as { images: string[]; info: string };
    const jobId = (JSON.parse(body.info) as { redline: { job_id: string } }).redline.job_id;
    expect(res.headers.get('x-request-id')).toBe(jobId);
    const png = Buffer.from(body.images[0]!, 'base64');
    const imageFile = join(dataDir, 'returned.png');
    writeFileSync(imageFile, png);

    // `redline audit search --image` names the generation row and its request id ...
    const byImage = cli('audit', 'search', '--db', dbPath, '--image', imageFile);
    expect(byImage.status, byImage.stderr).toBe(0);
    const imageRows = byImage.stdout.trim().split('\n').map((l) => JSON.parse(l) as { kind: string; event: { requestId: string } });
    expect(imageRows.map((r) => [r.kind, r.event.requestId])).toEqual([['generate', jobId]]);

    // ... and `export --request` writes that request's rows, oldest first, screening first.
    const out = join(dataDir, 'request.jsonl');
    const exported = cli('audit', 'export', '--db', dbPath, '--request', jobId, '--out', out);
    expect(exported.status, exported.stderr).toBe(0);
    const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { seq: number; kind: string; event: { verdict?: string; requestId: string } });
    expect(lines.map((l) => [l.kind, l.event.verdict, l.event.requestId])).toEqual([['screen', 'clamp', jobId], ['generate', undefined, jobId]]);
    expect(lines[0]!.seq).toBeLessThan(lines[1]!.seq);
  }, 60_000);
});
