import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { escapeHtml } from '../hardening.ts';
import type { ServiceContext } from '../submit.ts';

/** Where `npm run build:web` writes the React studio (web/). */
export const webDistDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'web', 'dist');

const contentTypes: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.map': 'application/json; charset=utf-8',
};
// Vite's hashed output names: one path segment, no dots at the start, a known extension.
// Anything else (.., slashes, encoded separators) is not a file we serve.
const ASSET_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,200}\.(js|css|svg|png|ico|woff2|map)$/;

/**
 * The web studio: web/dist/index.html at / and its hashed files under /assets/. Public,
 * like any login page: everything the studio then calls needs a session. Without a build
 * the page says how to make one.
 */
export function registerStudioRoutes(app: FastifyInstance, _ctx: ServiceContext, distDir: string = webDistDir): void {
  app.get('/', { config: { public: true }, schema: { hide: true } }, async (_req, reply) => {
    reply.header('Content-Type', 'text/html; charset=utf-8');
    reply.header('Cache-Control', 'no-cache');
    const index = join(distDir, 'index.html');
    if (existsSync(index)) return reply.send(await readFile(index));
    const title = escapeHtml('Redline studio');
    return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${title}</title></head>
<body>
<main>
<h1>${title}</h1>
<p>The web studio is not built in this checkout: run <code>npm run build:web</code>. The HTTP API is available: native under
<code>/api/v1</code>, AUTOMATIC1111-compatible under <code>/sdapi/v1</code>; the OpenAPI document is at
<code>/openapi.json</code> (API key required).</p>
</main>
</body></html>`;
  });

  app.get<{ Params: { name: string } }>('/assets/:name', { config: { public: true }, schema: { hide: true } }, async (req, reply) => {
    const name = req.params.name;
    const ext = ASSET_NAME.exec(name)?.[1];
    const file = join(distDir, 'assets', name);
    if (!ext || !existsSync(file)) {
      return reply.code(404).header('Content-Type', 'text/plain; charset=utf-8').send('not found');
    }
    reply.header('Content-Type', contentTypes[`.${ext}`]!);
    // Names carry a content hash, so a file under one name never changes.
    reply.header('Cache-Control', 'public, max-age=31536000, immutable');
    return reply.send(await readFile(file));
  });
}
