// A generation naming an adapter the server would refuse when the job runs is refused when
// it is submitted: 422 with the reason, through the native and the A1111 API, no job queued,
// and no server path in the answer. The backend lists a real folder of procedurally written
// adapters the way the pipeline backend does (src/adapters/registry.ts listAdapters).
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CATEGORY_METADATA_KEY, listAdapters } from '../../src/adapters/registry.ts';
import { adapterInfo } from '../../src/service/adapter-files.ts';
import type { AdapterInfo, GenerationBackend } from '../../src/service/backend.ts';
import { BROKEN_SIDECARS, VALID_GRADED_SIDECAR, writeTinyLora } from '../adapters/sidecar-fixtures.ts';
import { bearer, postJson, startHarness, tempDir, type Harness } from './support/harness.ts';
import { ProceduralBackend } from './support/procedural-components.ts';

const dir = tempDir('adapter-submit');
const lora = (name: string, sidecar?: unknown, metadata: Record<string, string> = {}): void => {
  writeTinyLora(join(dir, `${name}.safetensors`), metadata);
  if (sidecar !== undefined) writeFileSync(join(dir, `${name}.json`), typeof sidecar === 'string' ? sidecar : JSON.stringify(sidecar));
};
lora('graded', VALID_GRADED_SIDECAR);
lora('plain');
lora('later', VALID_GRADED_SIDECAR);
lora('gone', VALID_GRADED_SIDECAR);
lora('vfxgore', { category: 'vfx-gore', intensity: VALID_GRADED_SIDECAR.intensity });
lora('hard', { category: 'sexual-minors' });
lora('declared', undefined, { [CATEGORY_METADATA_KEY]: 'graphic-injury' });
// Valid JSON the registry accepts, but a graded calibration the policy cannot use: level 3 below level 1.
lora('decreasing', { category: 'graphic-injury', intensity: { '1': 0.9, '2': 0.6, '3': 0.3 } });
const truncated = BROKEN_SIDECARS.find((c) => c.name === 'truncated')!;
writeTinyLora(join(dir, 'truncated.safetensors'));
truncated.write(join(dir, 'truncated.json'));

/** The procedural backend, listing the folder above as PipelineBackend.listLoras lists it. */
const procedural = new ProceduralBackend({ stepMs: 0 });
let listed: AdapterInfo[] = [];
const backend: GenerationBackend = Object.assign(Object.create(procedural) as GenerationBackend, { listLoras: async () => listed });
async function listFolder(): Promise<AdapterInfo[]> {
  return (await listAdapters(dir, { hashes: false })).map((a) => adapterInfo(a, dir));
}

let h: Harness;
beforeAll(async () => {
  listed = await listFolder();
  h = await startHarness({ components: { backend } });
});
afterAll(async () => {
  await h?.close();
  rmSync(dir, { recursive: true, force: true });
});

const small = { width: 64, height: 64, steps: 2, seed: 1 };
const native = (name: string) => postJson(`${h.base}/api/v1/jobs`, { prompt: `a red cube <lora:${name}:0.8>`, ...small }, bearer(h.keys.creator));
const a1111 = (name: string) => postJson(`${h.base}/sdapi/v1/txt2img`, { prompt: `a red cube <lora:${name}:0.8>`, ...small }, bearer(h.keys.creator));

async function refusedAtSubmit(name: string): Promise<{ code: string; message: string }> {
  const before = procedural.requests.length;
  const res = await native(name);
  const text = await res.text();
  expect(res.status, text).toBe(422);
  expect(text).not.toContain(dir);
  expect(procedural.requests.length).toBe(before);
  return (JSON.parse(text) as { error: { code: string; message: string } }).error;
}

describe('adapters refused at submit time', () => {
  it('a broken sidecar', async () => {
    const err = await refusedAtSubmit('truncated');
    expect(err.code).toBe('adapter_refused');
    expect(err.message).toMatch(/Adapter "truncated" is refused: its sidecar truncated\.json is not valid JSON/);
  });

  it('an unknown category, naming the known ones', async () => {
    expect((await refusedAtSubmit('vfxgore')).message).toMatch(/declares the category "vfx-gore", which Redline does not know.*Known categories: graphic-injury/);
  });

  it('a hard-blocked category', async () => {
    expect((await refusedAtSubmit('hard')).message).toMatch(/the hard-blocked category minors-sexual/);
  });

  it('a category declared in the metadata with no sidecar', async () => {
    expect((await refusedAtSubmit('declared')).message).toMatch(/declares the category "graphic-injury" but it has no sidecar declared\.json/);
  });

  it('a graded calibration the policy cannot use (the listing accepts it; the planner would refuse it)', async () => {
    const err = await refusedAtSubmit('decreasing');
    expect(err.code).toBe('bad_calibration');
    expect(err.message).toMatch(/decreasing\.json: calibrated strengths must not decrease from level 1 to 3/);
  });

  it('a sidecar broken or removed after the server listed the adapter', async () => {
    writeFileSync(join(dir, 'later.json'), '{"category": "graphic-injury", "intensity": {"1": 0.3');
    const broken = await refusedAtSubmit('later');
    expect(broken.code).toBe('adapter_sidecar_invalid');
    expect(broken.message).toMatch(/later\.json is not valid JSON/);
    rmSync(join(dir, 'gone.json'));
    expect((await refusedAtSubmit('gone')).code).toBe('adapter_sidecar_missing');
  });

  it('the A1111 API answers 422 with the reason in detail', async () => {
    const res = await a1111('vfxgore');
    const body = (await res.json()) as { error: string; detail: string };
    expect(res.status).toBe(422);
    expect(body.error).toBe('ValidationError');
    expect(body.detail).toMatch(/"vfx-gore", which Redline does not know/);
    expect(JSON.stringify(body)).not.toContain(dir);
  });

  it('usable adapters, graded or plain, are accepted', async () => {
    for (const name of ['graded', 'plain']) {
      const res = await native(name);
      expect(res.status, await res.text()).toBe(202);
    }
  });
});
