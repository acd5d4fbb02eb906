// GET /api/v1/admin/policy through a real server wired the production way: the policy comes
// from REDLINE_POLICY via safetyComponents (src/service/components.ts), as under
// `redline serve`; only the generation backend is the procedural test one.
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { HARD_BLOCKED_CATEGORIES } from '../../src/safety/categories.ts';
import { safetyComponents } from '../../src/service/components.ts';
import { bearer, startHarness, tempDir, type Harness } from './support/harness.ts';

// Values that differ from the default policy, so the body can only match if this file is
// the one in force.
const POLICY_YAML = `
version: 1
categories:
  sexual: { enabled: false }
  graphic_injury:
    levels:
      - { level: 0, adapterStrength: 0.0, sldWhenClamped: MAX }
      - { level: 1, adapterStrength: 0.25, sldWhenClamped: STRONG, cfgScaleMax: 8 }
      - level: 2
        adapterStrength: 0.55
        sldWhenClamped: { sld_guidance_scale: 900, sld_warmup_steps: 8, sld_threshold: 0.02, sld_momentum_scale: 0.4, sld_mom_beta: 0.5 }
      - { level: 3, adapterStrength: 0.9, sldWhenClamped: "off" }
roles:
  viewer: { maxIntensity: 0, sexual: false }
  creator: { maxIntensity: 1, sexual: false }
  studio: { maxIntensity: 3, sexual: false, consentWorkflow: true }
  admin: { maxIntensity: 2, sexual: false }
protectedPersons:
  - name: Jane Example
semantic:
  enabled: false
  thresholds: { extremist: 0.91, graphic_injury: 0.93 }
outputChecks:
  nsfw: { thresholds: { porn: 0.55, hentai: 0.65, sexy: 0.8 }, action: blur }
  minFaceAge: 30
  likeness: { cosineThreshold: 0.75 }
  minFaceScore: 0.4
  photoThreshold: 0.45
audit:
  promptStorage: hash
  saltEnv: REDLINE_POLICY_ROUTE_TEST_SALT
`;
const SALT = 'salt-8f3a1c-never-leaves-the-server';

let h: Harness;
let dataDir: string;

beforeAll(async () => {
  dataDir = tempDir('policy-route');
  const policyPath = join(dataDir, 'studio-policy.yaml');
  writeFileSync(policyPath, POLICY_YAML);
  vi.stubEnv('REDLINE_POLICY', policyPath);
  vi.stubEnv('REDLINE_POLICY_ROUTE_TEST_SALT', SALT);
  h = await startHarness({ dataDir, backend: { stepMs: 0 }, components: await safetyComponents({ dataDir, role: 'server' }) });
}, 120_000);

afterAll(async () => {
  await h?.close();
  vi.unstubAllEnvs();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

const getPolicy = (headers: Record<string, string> = {}) => fetch(`${h.base}/api/v1/admin/policy`, { headers });

describe('GET /api/v1/admin/policy', () => {
  it('gives an admin the policy in force', async () => {
    const res = await getPolicy(bearer(h.keys.admin));
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, unknown>;
    expect(body.source).toContain('studio-policy.yaml');
    expect(body.roles).toEqual([
      { name: 'viewer', max_intensity: 0, sexual: false, consent_workflow: false },
      { name: 'creator', max_intensity: 1, sexual: false, consent_workflow: false },
      { name: 'studio', max_intensity: 3, sexual: false, consent_workflow: true },
      { name: 'admin', max_intensity: 2, sexual: false, consent_workflow: false },
    ]);
    expect(body.levels).toEqual([
      { level: 0, adapter_strength: 0, cfg_scale_max: null, sld_when_clamped: 'MAX' },
      { level: 1, adapter_strength: 0.25, cfg_scale_max: 8, sld_when_clamped: 'STRONG' },
      { level: 2, adapter_strength: 0.55, cfg_scale_max: null, sld_when_clamped: { sld_guidance_scale: 900, sld_warmup_steps: 8, sld_threshold: 0.02, sld_momentum_scale: 0.4, sld_mom_beta: 0.5 } },
      { level: 3, adapter_strength: 0.9, cfg_scale_max: null, sld_when_clamped: 'off' },
    ]);
    expect(body.hard_blocked).toEqual(HARD_BLOCKED_CATEGORIES.map((category) => ({ category, fixed: true })));
    expect(body.sexual).toEqual({ enabled: false });
    expect(body.output_checks).toEqual({
      nsfw: { thresholds: { porn: 0.55, hentai: 0.65, sexy: 0.8 }, action: 'blur' },
      min_face_age: 30, likeness_threshold: 0.75, min_face_score: 0.4, photo_threshold: 0.45,
    });
    expect(body.semantic).toEqual({ enabled: false, thresholds: { extremist: 0.91, graphic_injury: 0.93 } });
    expect(body.audit).toEqual({ prompt_storage: 'hash' });
    expect(body.protected_persons).toBe(1);
  });

  it('never sends the audit salt or the salt variable', async () => {
    const text = await (await getPolicy(bearer(h.keys.admin))).text();
    expect(text).not.toContain(SALT);
    expect(text).not.toContain('REDLINE_POLICY_ROUTE_TEST_SALT');
    expect(text).not.toContain('Jane Example');
  });

  it('refuses non-admin roles with 403 and anonymous callers with 401', async () => {
    for (const role of ['viewer', 'creator', 'studio'] as const) {
      const res = await getPolicy(bearer(h.keys[role]));
      expect(res.status, role).toBe(403);
      expect(await res.text()).not.toContain('studio-policy.yaml');
    }
    expect((await getPolicy()).status).toBe(401);
    expect((await getPolicy(bearer('rl_not-a-real-key'))).status).toBe(401);
  });
});
