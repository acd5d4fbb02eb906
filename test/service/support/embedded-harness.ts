import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { loadPolicy } from '../../../src/safety/policy/policy.ts';
import { PipelineBackend } from '../../../src/service/pipeline-backend.ts';
import { startHarness, tempDir, type Harness } from './harness.ts';

/**
 * The harness on the embedded model: a PipelineBackend with the default policy and empty
 * model and LoRA folders, so it serves the model bundled with Redline. Kept apart from
 * harness.ts so tests on the procedural backend do not load the pipeline. `close` stops
 * the server, then the backend.
 */
export async function startEmbeddedHarness(prefix: string): Promise<Harness> {
  const empty = tempDir(prefix);
  const backend = await PipelineBackend.open({ policy: loadPolicy(), modelsDir: join(empty, 'models'), lorasDir: join(empty, 'loras') });
  let h: Harness;
  try {
    h = await startHarness({ components: { backend } });
  } catch (err) {
    await backend.close();
    throw err;
  }
  return {
    ...h,
    async close() {
      await h.close();
      await backend.close();
      rmSync(empty, { recursive: true, force: true });
    },
  };
}
