// The embedded default model shipped in the repository (models/redline-tiny), used when
// no checkpoint is named: by `redline generate` without --model and by `redline serve`
// without REDLINE_MODEL or checkpoints in its models folder.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const EMBEDDED_MODEL_PATH = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'models', 'redline-tiny');

/** The embedded model's folder, or null when this checkout has none. */
export function embeddedModelPath(): string | null {
  return existsSync(join(EMBEDDED_MODEL_PATH, 'model_index.json')) ? EMBEDDED_MODEL_PATH : null;
}

/** The demo adapters trained for the embedded model ("splatter", with its calibration
 * sidecar), in A1111's models/Lora layout. */
export const EMBEDDED_ADAPTERS_PATH = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'models', 'Lora');

/** The embedded adapters' folder, or null when this checkout has none. */
export function embeddedAdaptersPath(): string | null {
  return existsSync(EMBEDDED_ADAPTERS_PATH) ? EMBEDDED_ADAPTERS_PATH : null;
}
