// First run of the studio with nothing configured: the backend serves the embedded model
// and its demo adapter (models/Lora), and a folder of the operator's takes precedence.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EMBEDDED_MODEL_PATH } from '../../src/pipeline/embedded.ts';
import { loadPolicy } from '../../src/safety/policy/policy.ts';
import { PipelineBackend } from '../../src/service/pipeline-backend.ts';

const empty = mkdtempSync(join(tmpdir(), 'redline-empty-'));
afterAll(() => rmSync(empty, { recursive: true, force: true }));

describe('the pipeline backend with no checkpoints or LoRAs configured', () => {
  it('serves the embedded model with its calibrated splatter adapter', async () => {
    const backend = await PipelineBackend.open({ policy: loadPolicy(), modelsDir: join(empty, 'models'), lorasDir: join(empty, 'loras') });
    try {
      const models = await backend.listModels();
      expect(models.map((m) => m.filename)).toEqual([EMBEDDED_MODEL_PATH]);
      const loras = await backend.listLoras();
      const splatter = loras.find((l) => l.name === 'splatter');
      expect(splatter?.metadata).toMatchObject({ redline: { category: 'graphic-injury' } });
      const levels = (splatter!.metadata as { redline: { intensity: Record<string, number> } }).redline.intensity;
      expect(levels['1']).toBeGreaterThan(0);
      expect(levels['3']).toBeGreaterThanOrEqual(levels['2']!);
    } finally {
      await backend.close();
    }
  }, 120_000);

  it("keeps the operator's LoRA folder when it exists", async () => {
    const backend = await PipelineBackend.open({ policy: loadPolicy(), modelsDir: join(empty, 'models'), lorasDir: empty });
    try {
      expect(await backend.listLoras()).toEqual([]);
    } finally {
      await backend.close();
    }
  }, 120_000);
});
