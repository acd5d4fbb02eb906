import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RoleCaps, ServiceComponents } from '../../../src/service/backend.ts';
import type { AuditLog } from '../../../src/safety/audit/audit-log.ts';
import type { Policy } from '../../../src/safety/policy/policy.ts';
import { Screener as PolicyScreener } from '../../../src/safety/screen/screener.ts';
import { auditSink, rolesFromPolicy, serviceScreener } from '../../../src/service/safety-wiring.ts';
import { buildServer, type RedlineServer, type ServerOptions } from '../../../src/service/server.ts';
import { makeTestComponents, type ProceduralOptions } from './procedural-components.ts';

type RoleName = 'viewer' | 'creator' | 'studio' | 'admin';

export interface Harness {
  server: RedlineServer;
  base: string;
  dataDir: string;
  components: ReturnType<typeof makeTestComponents>;
  keys: Record<RoleName, string>;
  /** The server-side caller identity of each key, as the audit log and blocks name it. */
  callers: Record<RoleName, string>;
  close(): Promise<void>;
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `redline-${prefix}-`));
}

/**
 * A real server on a loopback port, with one key per built-in role. `components` replaces
 * parts of the procedural test components before the server is built, so the job service
 * sees them too (components swapped on a running server reach the request path only).
 */
export async function startHarness(opts: {
  backend?: ProceduralOptions;
  components?: Partial<ServiceComponents>;
  roles?: Record<string, RoleCaps>;
  server?: Partial<ServerOptions>;
  dataDir?: string;
} = {}): Promise<Harness> {
  const dataDir = opts.dataDir ?? tempDir('svc');
  const components = Object.assign(makeTestComponents(opts.backend), opts.components);
  const server = await buildServer({ dataDir, components, logger: false, ...(opts.roles ? { roles: opts.roles } : {}), ...opts.server });
  const address = await server.app.listen({ host: '127.0.0.1', port: 0 });
  const keys = {} as Record<RoleName, string>;
  const callers = {} as Record<RoleName, string>;
  for (const role of ['viewer', 'creator', 'studio', 'admin'] as const) {
    const created = server.ctx.store.createKey(role, `test ${role}`);
    keys[role] = created.key;
    callers[role] = `key:${created.row.id}`;
  }
  return {
    server, base: address, dataDir, components, keys, callers,
    async close() {
      await server.close();
      if (!opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/**
 * The harness with src/safety in the request path: the policy's screener (or the one given,
 * e.g. with a semantic embedder), its role caps, and an audit sink on `log`.
 */
export function startPolicyHarness(opts: {
  policy: Policy;
  log: AuditLog;
  dataDir: string;
  screener?: PolicyScreener;
  components?: Partial<ServiceComponents>;
}): Promise<Harness> {
  return startHarness({
    dataDir: opts.dataDir, backend: { stepMs: 0 }, roles: rolesFromPolicy(opts.policy),
    components: { screener: serviceScreener(opts.screener ?? new PolicyScreener(opts.policy)), audit: auditSink(opts.log), ...opts.components },
  });
}

export function bearer(key: string): Record<string, string> {
  return { authorization: `Bearer ${key}` };
}

export async function postJson(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
}

/** Polls a native job until it is final. */
export async function waitForJob(base: string, key: string, id: string, timeoutMs = 30_000): Promise<Record<string, unknown>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const r = await fetch(`${base}/api/v1/jobs/${id}`, { headers: bearer(key) });
    const job = (await r.json()) as Record<string, unknown>;
    if (['succeeded', 'failed', 'cancelled'].includes(job.state as string)) return job;
    if (Date.now() > until) throw new Error(`job ${id} still ${String(job.state)} after ${timeoutMs} ms`);
    await new Promise((res) => setTimeout(res, 100));
  }
}

/**
 * Calls `onEvent` for each event of a Server-Sent Events response, until the stream ends
 * or `onEvent` returns 'stop'.
 */
export async function forEachSseEvent(res: Response, onEvent: (event: string, data: Record<string, unknown>) => 'stop' | void): Promise<void> {
  if (!res.ok || !res.body) throw new Error(`SSE ${res.url}: HTTP ${res.status}`);
  const decoder = new TextDecoder();
  let buf = '';
  for await (const chunk of res.body) {
    buf += decoder.decode(chunk as Uint8Array, { stream: true });
    let i: number;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const ev = /^event: (.+)$/m.exec(block)?.[1];
      const data = /^data: (.+)$/m.exec(block)?.[1];
      if (ev && data && onEvent(ev, JSON.parse(data) as Record<string, unknown>) === 'stop') return;
    }
  }
}

/** Reads an SSE stream to its end, returning the events. */
export async function readSse(url: string, headers: Record<string, string>): Promise<{ event: string; data: Record<string, unknown>; atMs: number }[]> {
  const events: { event: string; data: Record<string, unknown>; atMs: number }[] = [];
  await forEachSseEvent(await fetch(url, { headers }), (event, data) => {
    events.push({ event, data, atMs: performance.now() });
  });
  return events;
}
