import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Caller, ServiceStore } from './store.ts';

export const SESSION_COOKIE = 'rl_session';
export const CSRF_HEADER = 'x-csrf-token';

declare module 'fastify' {
  interface FastifyRequest {
    caller: Caller | null;
  }
  interface FastifyContextConfig {
    /** Route answers without authentication (health, the studio shell). */
    public?: boolean;
    /** Route needs the admin capability. */
    admin?: boolean;
  }
}

export type AuthResult = { caller: Caller } | { status: 401 | 403; message: string };

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Who is calling: a Bearer key, an A1111 `--api-auth` style Basic header (the password is
 * the API key; the user name is ignored, as the key names its owner), or the studio's
 * session cookie. A cookie-authenticated request that changes state must carry the
 * session's CSRF token in a header, which a cross-site form cannot set.
 */
export function authenticate(req: FastifyRequest, store: ServiceStore): AuthResult | null {
  const header = req.headers.authorization;
  if (header) {
    const [scheme, value = ''] = header.split(/\s+/, 2) as [string, string?];
    let key: string | null = null;
    if (/^bearer$/i.test(scheme)) key = value.trim();
    else if (/^basic$/i.test(scheme)) {
      const decoded = Buffer.from(value, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      key = colon >= 0 ? decoded.slice(colon + 1) : decoded;
    } else {
      return { status: 401, message: `unsupported Authorization scheme '${scheme}'; use Bearer <key> or Basic with the key as password` };
    }
    const r = store.authenticateKey(key);
    return 'error' in r ? { status: 401, message: r.error } : { caller: r.caller };
  }
  const token = req.cookies?.[SESSION_COOKIE];
  if (token) {
    const caller = store.sessionCaller(token);
    if (!caller) return { status: 401, message: 'session expired or signed out' };
    if (!SAFE_METHODS.has(req.method)) {
      const sent = req.headers[CSRF_HEADER];
      if (typeof sent !== 'string' || sent !== caller.csrfToken) {
        return { status: 403, message: `missing or wrong ${CSRF_HEADER} header for a signed-in request that changes state` };
      }
    }
    return { caller };
  }
  return null;
}

export function isA1111(req: FastifyRequest): boolean {
  return req.url.startsWith('/sdapi/');
}

/**
 * Error bodies: the native API answers `{error: {code, message}}`; the A1111 routes answer
 * the shape A1111's exception handler produces (`{error, detail, body, errors}`), which
 * A1111 clients print.
 */
export function sendError(
  req: FastifyRequest,
  reply: FastifyReply,
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
  /** The request's id in the audit log (a refusal's, or the job's): sent as X-Request-Id and `request_id`. */
  requestId?: string,
): FastifyReply {
  reply.headers(headers);
  if (requestId !== undefined) reply.header('X-Request-Id', requestId);
  const ref = requestId !== undefined ? { request_id: requestId } : {};
  if (status === 401) {
    // A Basic challenge makes browsers open their own password dialog over the page; the
    // web studio marks its fetches (and EventSource asks for an event stream) so they get
    // the 401 without it and show their own sign-in form.
    const fromStudio = req.headers['x-requested-with'] === 'XMLHttpRequest' || /text\/event-stream/.test(req.headers.accept ?? '');
    reply.header('WWW-Authenticate', fromStudio ? 'Bearer realm="redline"' : 'Basic realm="redline", Bearer realm="redline"');
  }
  if (isA1111(req)) {
    return reply.code(status).send({ error: a1111ErrorName(status), detail: message, body: '', errors: `${code}: ${message}`, ...ref });
  }
  return reply.code(status).send({ error: { code, message, ...ref } });
}

function a1111ErrorName(status: number): string {
  switch (status) {
    case 401: return 'Unauthorized';
    case 403: return 'RequestRefused';
    case 404: return 'NotFound';
    case 413: return 'PayloadTooLarge';
    case 422: return 'ValidationError';
    case 429: return 'RateLimited';
    case 503: return 'ServiceUnavailable';
    default: return status >= 500 ? 'InternalServerError' : 'HTTPException';
  }
}
