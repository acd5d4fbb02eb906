import fastifyCookie from '@fastify/cookie';
import fastifySwagger from '@fastify/swagger';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { RoleCaps, ServiceComponents } from './backend.ts';
import { authenticate, sendError } from './auth.ts';
import { BullQueue } from './bullmq-queue.ts';
import { defaultUploadLimits, securityHeaders, type UploadLimits } from './hardening.ts';
import { JobService } from './jobs.ts';
import { ServiceMetrics } from './metrics.ts';
import { ProgressHub } from './progress.ts';
import { EmbeddedQueue, type JobQueue } from './queue.ts';
import { RateLimiter } from './ratelimit.ts';
import { builtinRoles, RoleTable } from './roles.ts';
import { registerA1111Routes } from './routes/a1111.ts';
import { registerAdminRoutes } from './routes/admin.ts';
import { registerNativeRoutes } from './routes/native.ts';
import { registerStudioRoutes } from './routes/studio.ts';
import { ServiceStore } from './store.ts';
import type { ServiceContext } from './submit.ts';

export interface ServerOptions {
  dataDir: string;
  components: ServiceComponents;
  /** Embedded SQLite queue with an in-process worker (default), or BullMQ on Redis. */
  queue?: { kind: 'embedded' } | { kind: 'bullmq'; redisUrl: string; queueName?: string };
  /** Fastify/pino logger settings; false silences logs (tests). */
  logger?: FastifyServerOptions['logger'];
  uploadLimits?: UploadLimits;
  /** Init images by URL: off unless the operator turns it on. */
  allowInitImageUrls?: boolean;
  /** Origins allowed to call the API from a browser; empty (the default) = no CORS. */
  corsOrigins?: string[];
  /** Mark the session cookie Secure (on behind TLS; off for plain-HTTP loopback tests). */
  secureCookies?: boolean;
  /** Replaces the role table (tests, or a policy that the components do not carry). */
  roles?: Record<string, RoleCaps>;
  version?: string;
}

export interface RedlineServer {
  app: FastifyInstance;
  /** Every route registered, for tests and docs. */
  routes: { method: string; url: string; public: boolean }[];
  ctx: ServiceContext & { hub: ProgressHub; queue: JobQueue };
  close(): Promise<void>;
}

export async function buildServer(opts: ServerOptions): Promise<RedlineServer> {
  const uploadLimits = opts.uploadLimits ?? defaultUploadLimits;
  const app = Fastify({
    logger: opts.logger ?? { level: 'info', redact: ['req.headers.authorization', 'req.headers.cookie'] },
    // Up to 4 base64 init images plus a mask, and JSON around them.
    bodyLimit: Math.ceil(uploadLimits.maxBytes * 4 / 3) * 5 + 1024 * 1024,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true, allowUnionTypes: true } },
    trustProxy: false,
  });

  const store = new ServiceStore(opts.dataDir);
  const hub = new ProgressHub();
  const metrics = new ServiceMetrics();
  const roles = new RoleTable(opts.roles ?? opts.components.roles ?? builtinRoles);
  const queue: JobQueue = opts.queue?.kind === 'bullmq'
    ? new BullQueue(store, opts.queue.redisUrl, opts.queue.queueName)
    : new EmbeddedQueue(store, opts.components);
  const jobs = new JobService(store, hub, metrics, opts.components.audit, queue, app.log);
  const ctx = {
    store, components: opts.components, roles, jobs, metrics, hub, queue,
    limiter: new RateLimiter(), uploadLimits, allowInitImageUrls: opts.allowInitImageUrls ?? false,
  };

  const routes: RedlineServer['routes'] = [];
  app.addHook('onRoute', (r) => {
    for (const method of [r.method].flat()) {
      if (method !== 'HEAD') routes.push({ method, url: r.url, public: Boolean((r.config as { public?: boolean } | undefined)?.public) });
    }
  });
  await app.register(fastifyCookie);
  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Redline studio API', version: opts.version ?? '0.1.0', description: 'Native API under /api/v1 and an AUTOMATIC1111-compatible API under /sdapi/v1.' },
      components: {
        securitySchemes: {
          bearerKey: { type: 'http', scheme: 'bearer', description: 'API key (rl_...)' },
          basicKey: { type: 'http', scheme: 'basic', description: 'A1111 --api-auth style: any user name, the API key as password' },
          session: { type: 'apiKey', in: 'cookie', name: 'rl_session', description: 'Web studio session; state-changing requests also need the x-csrf-token header' },
        },
      },
      security: [{ bearerKey: [] }, { basicKey: [] }, { session: [] }],
    },
  });

  const corsOrigins = new Set(opts.corsOrigins ?? []);
  app.addHook('onRequest', async (req, reply) => {
    reply.headers(securityHeaders);
    const origin = req.headers.origin;
    if (origin && corsOrigins.has(origin)) {
      reply.header('Access-Control-Allow-Origin', origin);
      reply.header('Vary', 'Origin');
      if (req.method === 'OPTIONS') {
        reply.header('Access-Control-Allow-Methods', 'GET, POST, PATCH, DELETE');
        reply.header('Access-Control-Allow-Headers', 'authorization, content-type, x-csrf-token');
        reply.header('Access-Control-Max-Age', '600');
        return reply.code(204).send();
      }
    }
    req.caller = null;
    if (req.routeOptions.config?.public) return;
    if (!req.routeOptions.url) return; // 404s fall through to the not-found handler
    const auth = authenticate(req, store);
    if (auth === null) return sendError(req, reply, 401, 'unauthenticated', 'authentication required: send an API key as Bearer token or Basic password');
    if ('status' in auth) return sendError(req, reply, auth.status, auth.status === 401 ? 'unauthenticated' : 'csrf', auth.message);
    req.caller = auth.caller;
    if (!roles.has(auth.caller.role)) return sendError(req, reply, 403, 'unknown_role', `role '${auth.caller.role}' is not in the role table; ask an administrator`);
    if (req.routeOptions.config?.admin && !roles.get(auth.caller.role).canAdmin) {
      return sendError(req, reply, 403, 'forbidden', 'this route needs the admin role');
    }
  });

  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    metrics.httpRequests.inc({ method: req.method, route, status: String(reply.statusCode) });
    metrics.httpDuration.observe({ method: req.method, route }, reply.elapsedTime / 1000);
  });

  app.setErrorHandler((err: Error & { statusCode?: number; validation?: unknown; code?: string }, req, reply) => {
    if (err.validation) return sendError(req, reply, 422, 'invalid_request', err.message);
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status === 500) req.log.error({ err }, 'unhandled error');
    return sendError(req, reply, status, err.code ?? (status === 500 ? 'internal' : 'bad_request'), status === 500 ? 'internal error; see the server log' : err.message);
  });
  app.setNotFoundHandler((req, reply) => sendError(req, reply, 404, 'not_found', `no route ${req.method} ${req.url.split('?')[0]}`));

  registerNativeRoutes(app, ctx);
  registerA1111Routes(app, ctx);
  registerAdminRoutes(app, ctx);
  registerStudioRoutes(app, ctx);

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  app.get('/metrics', { config: { admin: true }, schema: { hide: true } }, async (_req, reply) => {
    const counts = store.countJobsByState();
    for (const [state, n] of Object.entries(counts)) metrics.jobsByState.set({ state }, n);
    metrics.queueDepth.set(counts.queued);
    reply.header('Content-Type', metrics.registry.contentType);
    return metrics.registry.metrics();
  });

  await app.ready();
  await jobs.start();

  return {
    app,
    routes,
    ctx,
    async close() {
      // Answer waiting A1111 calls and end SSE streams first: app.close() waits for open
      // requests, and those would otherwise wait for jobs the queue is about to stop.
      jobs.stopWaiting();
      hub.shutdown();
      await app.close();
      await queue.close();
      store.close();
    },
  };
}
