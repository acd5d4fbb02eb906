// The service's pipeline backend refuses a generation whose adapter has a broken sidecar
// (as found at startup, or broken after it), before any sampling; /sdapi/v1/loras shows the
// refusal. The embedded demo model is the checkpoint; adapters are written procedurally.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CATEGORY_METADATA_KEY } from '../../src/adapters/registry.ts';
import { RedlineError } from '../../src/errors.ts';
import { loadPolicy } from '../../src/safety/policy/policy.ts';
import type { GenerationRequest } from '../../src/service/backend.ts';
import { PipelineBackend } from '../../src/service/pipeline-backend.ts';
import { BROKEN_SIDECARS, VALID_GRADED_SIDECAR, writeTinyLora } from '../adapters/sidecar-fixtures.ts';

const dir = mkdtempSync(join(tmpdir(), 'redline-backend-refusal-'));
const loras = join(dir, 'loras');
mkdirSync(loras);
const broken = BROKEN_SIDECARS.filter((c) => ['truncated', 'stringlevels', 'oversize', 'junk'].includes(c.name));
for (const c of broken) {
  writeTinyLora(join(loras, `${c.name}.safetensors`));
  c.write(join(loras, `${c.name}.json`));
}
writeTinyLora(join(loras, 'declared.safetensors'), { [CATEGORY_METADATA_KEY]: 'graphic-injury' });
writeTinyLora(join(loras, 'later.safetensors'));
writeFileSync(join(loras, 'later.json'), JSON.stringify(VALID_GRADED_SIDECAR));

let backend: PipelineBackend;
beforeAll(async () => {
  backend = await PipelineBackend.open({ policy: loadPolicy(), modelsDir: join(dir, 'models'), lorasDir: loras });
}, 120_000);
afterAll(async () => {
  await backend?.close();
  rmSync(dir, { recursive: true, force: true });
});

function request(adapter: string): GenerationRequest {
  return {
    mode: 'txt2img', prompt: 'a red circle on a blue background', negativePrompt: '', adapters: [{ name: adapter, weight: 1 }],
    sampler: 'Euler a', scheduler: 'Automatic', steps: 2, cfgScale: 7, seed: 1, subseed: 0, subseedStrength: 0,
    width: 64, height: 64, batchSize: 1, nIter: 1, clipSkip: 1, eta: null, denoisingStrength: null, initImages: [], mask: null,
    model: null, intensity: 2, consentAttestation: null,
    screening: { verdict: 'allow', requestedIntensity: 2, effectiveIntensity: 2, categories: [], reason: '' },
  } as GenerationRequest;
}

async function refusal(adapter: string): Promise<{ err: RedlineError; steps: number }> {
  let steps = 0;
  const err = await backend.generate(request(adapter), { onProgress: () => void steps++, signal: new AbortController().signal, jobId: 'test' })
    .then(() => null, (e: unknown) => e);
  if (!(err instanceof RedlineError)) throw new Error(`expected a RedlineError, got ${String(err)}`);
  return { err, steps };
}

describe('the pipeline backend and refused adapters', () => {
  it('/sdapi/v1/loras lists each refused adapter with its refusal', async () => {
    const listed = await backend.listLoras();
    const refused = Object.fromEntries(listed.map((l) => [l.name, l.metadata.redline_refused]));
    for (const c of broken) expect(refused[c.name]).toMatch(c.problem);
    expect(refused.declared).toMatch(/declares the category "graphic-injury" but it has no sidecar/);
    expect(refused.later).toBeUndefined();
  });

  it('a generation naming a refused adapter fails before the first step, with the problem', async () => {
    for (const c of broken) {
      const { err, steps } = await refusal(c.name);
      expect(err.code).toBe('adapter_sidecar_invalid');
      expect(err.message).toMatch(c.problem);
      expect(err.message).not.toContain(dir);
      expect(steps).toBe(0);
    }
    const { err } = await refusal('declared');
    expect(err.code).toBe('adapter_sidecar_missing');
  });

  it('a sidecar broken or removed after startup refuses the adapter too', async () => {
    writeFileSync(join(loras, 'later.json'), '{"category": "graphic-injury", "intensity": {"1": 0.3, "2"');
    expect((await refusal('later')).err.message).toMatch(/later\.json is not valid JSON/);
    rmSync(join(loras, 'later.json'));
    expect((await refusal('later')).err.code).toBe('adapter_sidecar_missing');
  });
});
