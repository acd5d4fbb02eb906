// The service's view of the adapter files in a LoRA folder (src/adapters/registry.ts).
import { join } from 'node:path';
import { type AdapterListing, type AdapterSidecar, readSidecar } from '../adapters/registry.ts';
import { RedlineError } from '../errors.ts';
import type { AdapterInfo } from './backend.ts';

/**
 * A registry listing as the backend's listLoras gives it: the sidecar under `redline`, and a
 * refusal's message under `redline_refused` (submission refuses such an adapter by it).
 */
export function adapterInfo(a: AdapterListing, lorasDir: string): AdapterInfo {
  return {
    name: a.name,
    alias: a.name,
    path: join(lorasDir, a.file),
    metadata: { ...a.meta, ...(a.sidecar ? { redline: a.sidecar } : {}), ...(a.refusal ? { redline_refused: a.refusal.message } : {}) },
  };
}

/**
 * An adapter's sidecar as it is on disk now, not as the listing made at startup found it:
 * one broken since throws readSidecar's refusal, and one the listing had (`listed`) that is
 * gone refuses the adapter, since its intensity calibration is unknown. Submission checks
 * it to refuse early; the pipeline backend again before it runs the job.
 */
export function currentSidecar(path: string, name: string, listed: boolean): AdapterSidecar | null {
  const { sidecar } = readSidecar(path);
  if (listed && !sidecar) {
    throw new RedlineError('adapter_sidecar_missing', `Adapter "${name}" is refused: its sidecar ${name}.json was removed after the server started, so its intensity calibration is unknown.`,
      `Restore ${name}.json beside the adapter.`);
  }
  return sidecar;
}
