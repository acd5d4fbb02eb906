import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { RedlineError } from '../errors.ts';
import { AuditLog } from '../safety/audit/audit-log.ts';
import { loadPolicy } from '../safety/policy/policy.ts';
import { Screener } from '../safety/screen/screener.ts';
import type { ComponentsFactory, ServiceComponents } from './backend.ts';
import { auditSink, rolesFromPolicy, serviceScreener } from './safety-wiring.ts';

/**
 * The safety side of the production wiring: the policy (REDLINE_POLICY or the default
 * policy), its prompt screener, its role caps, and the hash-chained audit log in
 * <data-dir>/audit.db.
 */
export async function safetyComponents(ctx: Parameters<ComponentsFactory>[0]): Promise<Pick<ServiceComponents, 'screener' | 'audit' | 'roles'>> {
  const policy = loadPolicy(process.env.REDLINE_POLICY);
  const log = AuditLog.forPolicy(join(ctx.dataDir, 'audit.db'), policy);
  return { screener: serviceScreener(new Screener(policy)), audit: auditSink(log), roles: rolesFromPolicy(policy) };
}

/**
 * The production wiring of the layers below the service. The pipeline engineer replaces
 * the `backend` line when src/pipeline has a GenerationBackend (see README.md); output
 * checks and provenance plug in beside it. Until a backend exists, serving refuses to
 * start rather than run without a generator.
 */
export const createDefaultComponents: ComponentsFactory = async (ctx) => {
  const safety = await safetyComponents(ctx);
  throw new RedlineError(
    'components_missing',
    `this build has no generation backend (src/pipeline) wired into the service yet (safety: ${safety.roles ? 'ready' : 'missing'}).`,
    'Pass --components MODULE (a module exporting createComponents) or wire the backend in src/service/components.ts.',
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
