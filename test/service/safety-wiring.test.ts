import Database from 'better-sqlite3';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/safety/audit/audit-log.ts';
import { defaultPolicy } from '../../src/safety/policy/policy.ts';
import { parseDelimited } from '../../src/safety/screen/prompt-table.ts';
import { checkProvenance, loadSigningIdentity } from '../../src/safety/provenance/index.ts';
import { serviceProvenance } from '../../src/service/safety-wiring.ts';
import { safetyComponents } from '../../src/service/components.ts';
import { buildServer } from '../../src/service/server.ts';
import { redteamDir } from '../helpers/golden.ts';
import { ProceduralBackend } from './support/procedural-components.ts';
import { bearer, postJson, startHarness, startPolicyHarness, tempDir, type Harness } from './support/harness.ts';

// The service with the real policy screener and audit log of src/safety in its request
// path (the generator is still the procedural double).
const rows = (file: string) => {
  const t = parseDelimited(readFileSync(join(redteamDir, file), 'utf8'), ',');
  const header = t[0]!;
  return t.slice(1).map((r) => Object.fromEntries(header.map((h, i) => [h.trim(), r[i] ?? ''])));
};

describe('service with the safety layer wired in', () => {
  let h: Harness;
  let log: AuditLog;
  const policy = defaultPolicy();
  beforeAll(async () => {
    const dataDir = tempDir('safety');
    log = new AuditLog(join(dataDir, 'audit.db'));
    h = await startPolicyHarness({ policy, log, dataDir });
  });
  afterAll(async () => {
    await h.close();
    log.close();
  });

  it('refuses every hard-blocked red-team prompt through the A1111 API, for every role', async () => {
    const hard = rows('hardblock.csv');
    expect(hard.length).toBeGreaterThan(20);
    for (const role of ['creator', 'admin'] as const) {
      for (const r of hard) {
        const res = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: r.prompt, steps: 2, width: 64, height: 64 }, bearer(h.keys[role]));
        expect(res.status, `${role}: ${r.category}`).toBe(403);
        const body = (await res.json()) as { error: string; detail: string };
        expect(body.error).toBe('RequestRefused');
        expect(body.detail.length).toBeGreaterThan(0);
      }
    }
    expect(h.components.backend.requests).toHaveLength(0);
  });

  it('generates legitimate graded prompts at no more than the policy cap of the caller\'s role', async () => {
    const cap = policy.roles.creator!.maxIntensity;
    for (const r of rows('graded_legit.csv')) {
      const res = await postJson(`${h.base}/api/v1/jobs`, { prompt: r.prompt, steps: 2, width: 64, height: 64, intensity: 3 }, bearer(h.keys.creator));
      expect(res.status, r.prompt).toBe(202);
      const job = (await res.json()) as { intensity: { effective: number; verdict: string } };
      expect(job.intensity.effective).toBeLessThanOrEqual(cap);
      if (cap < 3) expect(job.intensity.verdict).toBe('clamp');
    }
  });

  it('writes screenings and refusals to the hash-chained audit log, which verifies', () => {
    const verified = log.verify();
    expect(verified.ok).toBe(true);
    const db = new Database(log.path, { readonly: true });
    const kinds = db.prepare('SELECT kind, COUNT(*) AS n FROM audit GROUP BY kind').all() as { kind: string; n: number }[];
    db.close();
    const byKind = Object.fromEntries(kinds.map((k) => [k.kind, k.n]));
    // Two roles x every hard-blocked prompt, plus the graded ones, were screened.
    expect(byKind.screen).toBeGreaterThanOrEqual(2 * rows('hardblock.csv').length + rows('graded_legit.csv').length);
  });
});

describe('provenance on images the service returns', () => {
  it('marks every returned PNG: parameters, XMP, signed C2PA and the watermark payload', async () => {
    const h = await startHarness({ backend: { stepMs: 0 } });
    try {
      const identity = await loadSigningIdentity({ dataDir: h.dataDir, onCreate: () => undefined });
      const payload = new Uint8Array([0x52, 0x4c, 0x01, 0x02, 0x03, 0x04]);
      Object.assign(h.server.ctx.components, { provenance: serviceProvenance(identity, payload) });
      const res = await postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: 'teal gradient', steps: 2, width: 256, height: 256, seed: 5 }, bearer(h.keys.creator));
      expect(res.status).toBe(200);
      const body = (await res.json()) as { images: string[]; info: string };
      const report = await checkProvenance(Buffer.from(body.images[0]!, 'base64'), { expectedPayload: payload });
      expect(report.parameters.present).toBe(true);
      expect(report.parameters.text).toMatch(/Seed: 5/);
      expect(report.xmp.trainedAlgorithmicMedia).toBe(true);
      expect(report.c2pa).toMatchObject({ present: true, signatureValid: true, hashBindingValid: true });
      expect(report.watermark.present).toBe(true);
      expect(report.watermark.bitErrors).toBe(0);
      expect((JSON.parse(body.info) as { redline: { provenance: unknown[] } }).redline.provenance[0]).toEqual({ parameters: true, xmp: true, c2pa: 'signed', watermark: true });
    } finally {
      await h.close();
    }
  });
});

describe('the production safety wiring (components.ts)', () => {
  it('loads policy, screener, audit, image checks and provenance, and a procedural render passes them', async () => {
    const dataDir = tempDir('components');
    const safety = await safetyComponents({ dataDir, role: 'server' });
    const backend = new ProceduralBackend({ stepMs: 0 });
    const server = await buildServer({ dataDir, components: { ...safety, backend }, logger: false });
    try {
      const address = await server.app.listen({ host: '127.0.0.1', port: 0 });
      const key = server.ctx.store.createKey('creator', 'wiring').key;
      const res = await postJson(`${address}/sdapi/v1/txt2img`, { prompt: 'a teal and orange gradient', steps: 2, width: 256, height: 256 }, bearer(key));
      expect(res.status).toBe(200);
      const body = (await res.json()) as { images: string[] };
      expect(body.images).toHaveLength(1);
      const report = await checkProvenance(Buffer.from(body.images[0]!, 'base64'));
      expect(report.c2pa.signatureValid).toBe(true);
      expect(report.watermark.payloadHex).toBe('524c00000000');
      const health = (await (await fetch(`${address}/api/v1/health`)).json()) as Record<string, unknown>;
      expect(health).toMatchObject({ output_checks: true, provenance: true, audit: true });
    } finally {
      await server.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
