import { type AdapterSidecar, readSidecar } from '../adapters/registry.ts';
import { RedlineError } from '../errors.ts';

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
