import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { RedlineError } from '../errors.ts';
import type { ComponentsFactory, ServiceComponents } from './backend.ts';

/**
 * The production wiring of the layers below the service. This is the one function the
 * pipeline and safety engineers edit when their implementations land (see README.md).
 * Until then it refuses to start rather than serve without a generator or a screener.
 */
export const createDefaultComponents: ComponentsFactory = async (_ctx) => {
  const missing = ['generation backend (src/pipeline)', 'prompt screener (src/safety)'];
  throw new RedlineError(
    'components_missing',
    `this build has no ${missing.join(' and no ')} wired into the service yet.`,
    'Pass --components MODULE (a module exporting createComponents) or wire them in src/service/components.ts.',
  );
};

/** Loads `createComponents` from a module path given on the command line. */
export async function loadComponents(modulePath: string | undefined, ctx: Parameters<ComponentsFactory>[0]): Promise<ServiceComponents> {
  if (!modulePath) return createDefaultComponents(ctx);
  const abs = resolve(modulePath);
  if (!existsSync(abs)) throw new RedlineError('components_not_found', `components module '${modulePath}' does not exist.`);
  const mod = (await import(pathToFileURL(abs).href)) as { createComponents?: ComponentsFactory };
  if (typeof mod.createComponents !== 'function') {
    throw new RedlineError('components_bad_module', `'${modulePath}' does not export a createComponents function.`, 'See src/service/README.md.');
  }
  const c = await mod.createComponents(ctx);
  if (!c?.backend || !c.screener) {
    throw new RedlineError('components_incomplete', `'${modulePath}' returned components without a backend or a screener; both are required.`);
  }
  return c;
}
