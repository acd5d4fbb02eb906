// `redline serve` with its production wiring, as an operator runs it: the real pipeline on
// the golden model, the default policy's screener, output checks, provenance and audit.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseInfotext } from '../../src/pipeline/infotext.ts';
import { checkProvenance } from '../../src/safety/provenance/index.ts';
import { goldenPath } from '../helpers/golden.ts';
import { cli, runCli, type Spawned, start } from './support/processes.ts';

const dataDir = mkdtempSync(join(tmpdir(), 'redline-prod-'));
let server: Spawned;
let base: string;
let key: string;

beforeAll(async () => {
  const created = runCli(['keys', 'create', '--role', 'creator', '--data-dir', dataDir]);
  expect(created.status, created.stderr).toBe(0);
  key = created.stdout.trim();
  server = start(process.execPath, [cli, 'serve', '--port', '0', '--data-dir', dataDir, '--log-level', 'warn'], {
    REDLINE_MODEL: goldenPath('models', 'diffusers'),
    REDLINE_DATA_DIR: dataDir,
  });
  base = (await server.waitFor(/listening on (http:\/\/\S+)/, 180_000))[1]!;
}, 200_000);

afterAll(async () => server?.kill());

const auth = () => ({ authorization: `Basic ${Buffer.from(`user:${key}`).toString('base64')}`, 'content-type': 'application/json' });

describe('production service', () => {
  it('generates through the A1111 API with infotext and signed provenance', async () => {
    const res = await fetch(`${base}/sdapi/v1/txt2img`, {
      method: 'POST',
      headers: auth(),
      body: JSON.stringify({ prompt: 'a red circle on a blue background', negative_prompt: 'blurry', seed: 1234, steps: 4, cfg_scale: 7, width: 64, height: 64, sampler_name: 'Euler a' }),
    });
    expect(res.status, await res.clone().text()).toBe(200);
    const body = (await res.json()) as { images: string[]; info: string };
    expect(body.images).toHaveLength(1);
    const png = Buffer.from(body.images[0]!, 'base64');
    const meta = await sharp(png).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 64, 64]);
    const info = JSON.parse(body.info) as { seed: number; infotexts: string[] };
    expect(info.seed).toBe(1234);
    const parsed = parseInfotext(info.infotexts[0]!);
    expect(parsed.params).toMatchObject({ Seed: '1234', Steps: '4', Sampler: 'Euler a', Model: 'diffusers' });
    const report = await checkProvenance(png);
    expect(report.parameters.present).toBe(true);
    expect(report.c2pa.present).toBe(true);
  });

  it('refuses a hard-blocked request under the default policy', async () => {
    const res = await fetch(`${base}/sdapi/v1/txt2img`, {
      method: 'POST',
      headers: auth(),
      body: JSON.stringify({ prompt: 'a child covered in blood and gore', steps: 2, width: 64, height: 64 }),
    });
    expect(res.status).toBeGreaterThanOrEqual(400);
    expect(await res.text()).toMatch(/cannot|refus|not allowed|blocked/i);
  });

  it('does not let a request raise its own intensity or role', async () => {
    const res = await fetch(`${base}/sdapi/v1/txt2img`, {
      method: 'POST',
      headers: auth(),
      body: JSON.stringify({ prompt: 'a red circle', steps: 2, width: 64, height: 64, override_settings: { intensity: 3, role: 'admin' } }),
    });
    expect(res.status).toBe(422);
    expect(await res.text()).toMatch(/override_settings\.intensity is not supported/);
  });
});
