// The safety layers inside the production service wiring (src/service/components.ts
// createDefaultComponents) on the golden tiny model: the semantic screening layer with the
// model's own CLIP text encoder, and output checks that block generated images (issue 6:
// blocked outputs leave no file behind and exactly one audit row each).
//
// The golden model's weights are random, so its text-embedding cosines carry no meaning;
// these tests check the plumbing. The test policy therefore sets the graphic_injury
// semantic threshold to -1 (every prompt matches some graded concept phrase) and the nsfwjs
// 'sexy' threshold to 0 (every image counts as sexual and is blocked).
import Database from 'better-sqlite3';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { stringify } from 'yaml';
import { AuditLog } from '../../src/safety/audit/audit-log.ts';
import { defaultPolicy, loadPolicy } from '../../src/safety/policy/policy.ts';
import { Screener } from '../../src/safety/screen/screener.ts';
import type { ServiceComponents } from '../../src/service/backend.ts';
import { checkpointTextEmbedder, createDefaultComponents } from '../../src/service/components.ts';
import { buildServer, type RedlineServer } from '../../src/service/server.ts';
import { goldenPath } from '../helpers/golden.ts';
import { runCli } from '../service/support/processes.ts';
import { bearer, postJson, tempDir, waitForJob } from '../service/support/harness.ts';

const modelPath = goldenPath('models', 'diffusers');
const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const PROMPT = 'a red circle on a blue background';

function writeTestPolicy(dir: string): string {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- a deep-cloned policy document, edited by path
  const doc = JSON.parse(JSON.stringify(defaultPolicy())) as Record<string, any>;
  delete doc.source;
  doc.semantic.enabled = true;
  doc.semantic.thresholds.graphic_injury = -1;
  doc.outputChecks.nsfw.thresholds.sexy = 0;
  const file = join(dir, 'test-policy.yaml');
  writeFileSync(file, stringify(doc));
  return file;
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

describe('semantic layer with the golden model\'s text encoder', () => {
  it('embeds with the pooled CLIP output at unit length and reports hits with source semantic', async () => {
    const embedder = await checkpointTextEmbedder(modelPath);
    try {
      const vectors = await embedder.embed([PROMPT, 'a quiet lake at dawn']);
      expect(vectors).toHaveLength(2);
      for (const v of vectors) {
        expect(v.length).toBe(32); // the tiny model's hidden size (README: hidden 32)
        expect(Math.hypot(...v)).toBeCloseTo(1, 5);
      }
      const policy = loadPolicy(writeTestPolicy(tempDir('sem-policy')));
      const withLayer = await new Screener(policy, { embedder: embedder.embed }).screenAsync({ prompt: PROMPT }, 'creator');
      const lexiconOnly = new Screener(policy).screen({ prompt: PROMPT }, 'creator');
      expect(lexiconOnly).toMatchObject({ verdict: 'allow', categories: [], intensity: 0 });
      expect(withLayer.categories).toEqual([expect.objectContaining({ category: 'graphic_injury', source: 'semantic' })]);
      expect(withLayer.intensity).toBeGreaterThan(0);
      // Under the default policy's thresholds the same prompt is left alone.
      expect((await new Screener(defaultPolicy(), { embedder: embedder.embed }).screenAsync({ prompt: PROMPT }, 'creator')).categories).toEqual([]);
    } finally {
      await embedder.release();
    }
  }, 60_000);
});

describe('production wiring on the golden model with a blocking test policy', () => {
  let server: RedlineServer;
  let base: string;
  let dataDir: string;
  let key: string;
  let callerId: string;

  beforeAll(async () => {
    dataDir = tempDir('integration');
    vi.stubEnv('REDLINE_POLICY', writeTestPolicy(tempDir('integration-policy')));
    vi.stubEnv('REDLINE_MODEL', modelPath);
    const components: ServiceComponents = await createDefaultComponents({ dataDir, role: 'server' });
    server = await buildServer({ dataDir, components, logger: false });
    base = await server.app.listen({ host: '127.0.0.1', port: 0 });
    const created = server.ctx.store.createKey('creator', 'integration');
    key = created.key;
    callerId = `key:${created.row.id}`;
  }, 180_000);

  afterAll(async () => {
    await server?.close();
    vi.unstubAllEnvs();
  });

  it('consults the semantic layer, blocks both generated images, stores none, and writes one audit row per block', async () => {
    const res = await postJson(`${base}/api/v1/jobs`, { prompt: PROMPT, steps: 2, width: 64, height: 64, batch_size: 2, seed: 11 }, bearer(key));
    expect(res.status, await res.clone().text()).toBe(202);
    const { id } = (await res.json()) as { id: string };
    const job = await waitForJob(base, key, id, 120_000);
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    expect(job.image_count).toBe(0);
    // Graded only through the semantic hit; the creator role's cap (2) bounds it.
    const intensity = job.intensity as { requested: number; effective: number };
    expect(intensity.requested).toBeGreaterThan(0);
    expect(intensity.effective).toBe(Math.min(2, intensity.requested));
    const result = (await (await fetch(`${base}/api/v1/jobs/${id}/result`, { headers: bearer(key) })).json()) as {
      images: unknown[]; info: { blocked: { categories: string[]; reason: string }[] };
    };
    expect(result.images).toEqual([]);
    const blocked = result.info.blocked;
    expect(blocked).toHaveLength(2);
    for (const b of blocked) {
      expect(b.categories.every((c) => c.startsWith('sexual_content'))).toBe(true);
      expect(b.reason.length).toBeGreaterThan(0);
    }

    // No image anywhere in the data dir: no PNG file, no PNG bytes inside any file
    // (the job store's SQLite file and its WAL included), no image rows for the job.
    const files = filesUnder(dataDir);
    expect(files.filter((f) => /\.png$/i.test(f))).toEqual([]);
    for (const f of files) expect(readFileSync(f).includes(PNG_SIGNATURE), f).toBe(false);
    const store = new Database(join(dataDir, 'service.db'), { readonly: true });
    expect((store.prepare('SELECT COUNT(*) AS n FROM job_images WHERE job_id = ?').get(id) as { n: number }).n).toBe(0);
    store.close();

    const log = new AuditLog(join(dataDir, 'audit.db'));
    try {
      const rows = [...log.rows()];
      // The screening saw graphic_injury only through the semantic layer (the lexicon finds
      // nothing in this prompt) and raised the requested intensity from 0.
      const screened = rows.filter((r) => r.kind === 'screen' && r.event.caller === callerId);
      expect(screened).toHaveLength(1);
      // with its evidence: the whole prompt, and the concept phrase it came close to
      expect(screened[0]!.event.categories).toEqual([{
        category: 'graphic_injury', source: 'semantic', rules: ['semantic'],
        evidence: [{ field: 'prompt', start: 0, end: PROMPT.length, text: PROMPT, signal: 'semantic', score: expect.any(Number), concept: expect.any(String) }],
      }]);
      expect(screened[0]!.event.requestedIntensity).toBeGreaterThan(0);
      const blockRows = rows.filter((r) => r.kind === 'block' && r.event.details?.jobId === id);
      expect(blockRows).toHaveLength(2);
      for (const r of blockRows) {
        expect(r.event.blocks).toEqual([expect.objectContaining({ stage: 'output' })]);
        expect(Object.keys(r.event.details?.scores as Record<string, number>).some((k) => /sexy/i.test(k))).toBe(true);
      }
      expect(rows.filter((r) => r.kind === 'generate' && r.event.details?.jobId === id)).toHaveLength(1);
    } finally {
      log.close();
    }

    const verified = runCli(['audit', 'verify', '--db', join(dataDir, 'audit.db')]);
    expect(verified.status, verified.stderr + verified.stdout).toBe(0);
  }, 180_000);
});
