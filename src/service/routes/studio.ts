import type { FastifyInstance } from 'fastify';
import { escapeHtml } from '../hardening.ts';
import type { ServiceContext } from '../submit.ts';

// Placeholder until the React studio (issue 7, part 7) lands in web/: a static sign-in
// shell. Public, like any login page; everything it would call needs a session.
export function registerStudioRoutes(app: FastifyInstance, _ctx: ServiceContext): void {
  app.get('/', { config: { public: true }, schema: { hide: true } }, async (_req, reply) => {
    const title = escapeHtml('Redline studio');
    reply.header('Content-Type', 'text/html; charset=utf-8');
    return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${title}</title></head>
<body>
<main>
<h1>${title}</h1>
<p>The web studio is not installed in this build. The HTTP API is available: native under
<code>/api/v1</code>, AUTOMATIC1111-compatible under <code>/sdapi/v1</code>; the OpenAPI document is at
<code>/openapi.json</code> (API key required).</p>
</main>
</body></html>`;
  });
}
