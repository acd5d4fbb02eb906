// The consent workflow for img2img of a photographed face (issue 6, part 2), through a real
// server: the role's policy flag (server side) and the request's attestation reference
// decide; the reference lands in the audit log. The init image is a face drawn by code
// (test/safety/output/synthetic.ts). Drawn faces score 0.37-0.69 on the nsfwjs "photo"
// sum (src/safety/output/README.md), so the test policy sets photoThreshold 0.1 to make
// the drawn face count as a photograph; everything else is the default policy.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog, type AuditRow } from '../../src/safety/audit/audit-log.ts';
import { ImageSafetyChecks, outputCheckOptionsFromPolicy } from '../../src/safety/output/index.ts';
import { defaultPolicy, parsePolicy } from '../../src/safety/policy/policy.ts';
import { serviceOutputChecker } from '../../src/service/safety-wiring.ts';
import { PERSON_A, renderFace, toPng } from '../safety/output/synthetic.ts';
import { stringify } from 'yaml';
import { bearer, postJson, startPolicyHarness, tempDir, waitForJob, type Harness } from './support/harness.ts';

const policy = defaultPolicy();
policy.roles.studio!.consentWorkflow = true;
policy.outputChecks.photoThreshold = 0.1;

let h: Harness;
let log: AuditLog;
let face: string;

beforeAll(async () => {
  const dataDir = tempDir('consent');
  log = new AuditLog(join(dataDir, 'audit.db'));
  const checks = await ImageSafetyChecks.load({
    options: outputCheckOptionsFromPolicy(policy.outputChecks, { photoThreshold: policy.outputChecks.photoThreshold, minFaceScore: policy.outputChecks.minFaceScore }),
    likeness: () => [],
  });
  h = await startPolicyHarness({ policy, log, dataDir, components: { outputChecker: serviceOutputChecker(checks, { policy, log }) } });
  face = (await toPng(await renderFace(PERSON_A))).toString('base64');
}, 120_000);

afterAll(async () => {
  await h?.close();
  log?.close();
});

const img2img = (extra: Record<string, unknown>) => ({
  mode: 'img2img', prompt: 'portrait of an actor, theatrical makeup', init_images: [face], steps: 2, width: 512, height: 512, seed: 7, ...extra,
});

async function runJob(role: keyof Harness['keys'], body: Record<string, unknown>): Promise<{ id: string; job: Record<string, unknown> }> {
  const res = await postJson(`${h.base}/api/v1/jobs`, body, bearer(h.keys[role]));
  expect(res.status, await res.clone().text()).toBe(202);
  const { id } = (await res.json()) as { id: string };
  return { id, job: await waitForJob(h.base, h.keys[role], id, 60_000) };
}

const rowsFor = (jobId: string): AuditRow[] => [...log.rows()].filter((r) => r.event.details?.jobId === jobId);

describe('consent workflow for img2img of a photographed face', () => {
  it('refuses graded edits for a role without the workflow, even with a reference', async () => {
    const { id, job } = await runJob('creator', img2img({ intensity: 2, consent_attestation_ref: 'consent-0001' }));
    expect(job.state).toBe('failed');
    expect(String(job.error)).toMatch(/refused/);
    const rows = rowsFor(id);
    expect(rows.map((r) => r.kind)).toEqual(['block']);
    expect(rows[0]!.event.blocks).toEqual([expect.objectContaining({ stage: 'input', category: 'photographic_face_in_graded_content' })]);
  });

  it('refuses graded edits for a role with the workflow when the request carries no reference', async () => {
    const { id, job } = await runJob('studio', img2img({ intensity: 2 }));
    expect(job.state).toBe('failed');
    expect(rowsFor(id)[0]!.event.blocks).toEqual([expect.objectContaining({ stage: 'input', category: 'consent_attestation_missing' })]);
  });

  it('passes graded edits for a role with the workflow and a reference, and stores the reference in the audit log', async () => {
    const before = log.verify().rows;
    const { id, job } = await runJob('studio', img2img({ intensity: 2, consent_attestation_ref: '  consent-0042 ' }));
    expect(job.state, JSON.stringify(job)).toBe('succeeded');
    const consent = rowsFor(id).filter((r) => r.kind === 'consent');
    expect(consent).toHaveLength(1);
    expect(consent[0]!.event).toMatchObject({ role: 'studio', effectiveIntensity: 2, details: { attestationRef: 'consent-0042', photographicFace: true, stage: 'input' } });
    // The same caller's screening row carries the reference too.
    const screened = [...log.rows()].filter((r) => r.seq > before && r.kind === 'screen' && r.event.details?.consentAttestationRef === 'consent-0042');
    expect(screened).toHaveLength(1);
    expect(consent[0]!.event.caller).toBe(screened[0]!.event.caller);
    // Both carry the job id as requestId: the consent pass links to its screening row by it.
    expect([consent[0]!.event.requestId, screened[0]!.event.requestId]).toEqual([id, id]);
    expect(log.verify().ok).toBe(true);
  });

  it('lets a drawn face through at intensity 0 without any reference', async () => {
    const { id, job } = await runJob('creator', img2img({ intensity: 0 }));
    expect(job.state).toBe('succeeded');
    expect(rowsFor(id).map((r) => r.kind)).toEqual(['generate']);
  });

  it('takes the reference from the A1111 img2img extension field redline_consent', async () => {
    const base = { prompt: 'portrait of an actor, theatrical makeup', init_images: [face], steps: 2, width: 512, height: 512, intensity: 2 };
    const without = await postJson(`${h.base}/sdapi/v1/img2img`, base, bearer(h.keys.studio));
    expect(without.status).toBeGreaterThanOrEqual(400);
    expect(await without.text()).toMatch(/consent attestation/i);
    const withRef = await postJson(`${h.base}/sdapi/v1/img2img`, { ...base, redline_consent: 'consent-a1111' }, bearer(h.keys.studio));
    expect(withRef.status, await withRef.clone().text()).toBe(200);
    expect([...log.rows()].some((r) => r.kind === 'consent' && r.event.details?.attestationRef === 'consent-a1111')).toBe(true);
  });

  it('rejects a reference on txt2img, where it means nothing', async () => {
    const res = await postJson(`${h.base}/api/v1/jobs`, { prompt: 'a lake', steps: 2, width: 64, height: 64, consent_attestation_ref: 'x' }, bearer(h.keys.studio));
    expect(res.status).toBe(422);
    expect(await res.text()).toMatch(/img2img/);
  });
});

describe('policy flag', () => {
  it('defaults to false for every role and must be a boolean', () => {
    expect(Object.values(defaultPolicy().roles).map((r) => r.consentWorkflow)).toEqual([false, false, false, false]);
    const doc = JSON.parse(JSON.stringify(defaultPolicy())) as Record<string, unknown> & { roles: Record<string, Record<string, unknown>> };
    delete doc.source;
    doc.roles.studio!.consentWorkflow = 'yes';
    expect(() => parsePolicy(stringify(doc), 'test.yaml')).toThrow(/policy\.roles\.studio\.consentWorkflow: expected true or false/);
    doc.roles.studio!.consentWorkflow = true;
    expect(parsePolicy(stringify(doc), 'test.yaml').roles.studio!.consentWorkflow).toBe(true);
  });
});
