import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RoleCaps } from '../../../src/service/backend.ts';
import { buildServer, type RedlineServer, type ServerOptions } from '../../../src/service/server.ts';
import { makeTestComponents, type ProceduralOptions } from './procedural-components.ts';

export interface Harness {
  server: RedlineServer;
  base: string;
  dataDir: string;
  components: ReturnType<typeof makeTestComponents>;
  keys: Record<'viewer' | 'creator' | 'studio' | 'admin', string>;
  close(): Promise<void>;
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `redline-${prefix}-`));
}

/** A real server on a loopback port, with one key per built-in role. */
export async function startHarness(opts: {
  backend?: ProceduralOptions;
  roles?: Record<string, RoleCaps>;
  server?: Partial<ServerOptions>;
  dataDir?: string;
} = {}): Promise<Harness> {
  const dataDir = opts.dataDir ?? tempDir('svc');
  const components = makeTestComponents(opts.backend);
  const server = await buildServer({ dataDir, components, logger: false, ...(opts.roles ? { roles: opts.roles } : {}), ...opts.server });
  const address = await server.app.listen({ host: '127.0.0.1', port: 0 });
  const keys = {
    viewer: server.ctx.store.createKey('viewer', 'test viewer').key,
    creator: server.ctx.store.createKey('creator', 'test creator').key,
    studio: server.ctx.store.createKey('studio', 'test studio').key,
    admin: server.ctx.store.createKey('admin', 'test admin').key,
  };
  return {
    server, base: address, dataDir, components, keys,
    async close() {
      await server.close();
      if (!opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
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

/** Reads an SSE stream to its end, returning the events. */
export async function readSse(url: string, headers: Record<string, string>): Promise<{ event: string; data: Record<string, unknown>; atMs: number }[]> {
  const res = await fetch(url, { headers });
  if (!res.ok || !res.body) throw new Error(`SSE ${url}: HTTP ${res.status}`);
  const events: { event: string; data: Record<string, unknown>; atMs: number }[] = [];
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
      if (ev && data) events.push({ event: ev, data: JSON.parse(data) as Record<string, unknown>, atMs: performance.now() });
    }
  }
  return events;
}
