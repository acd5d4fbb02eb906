import type { FastifyInstance } from 'fastify';
import { RedlineError } from '../../errors.ts';
import { HARD_BLOCKED_CATEGORIES } from '../../safety/categories.ts';
import type { Policy } from '../../safety/policy/policy.ts';
import { sendError } from '../auth.ts';
import type { ServiceAuditSearch } from '../safety-wiring.ts';
import type { ServiceContext } from '../submit.ts';

const admin = { admin: true } as const;
const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

const keySchema = {
  type: 'object',
  properties: {
    id: { type: 'string' }, name: { type: 'string' }, role: { type: 'string' }, user_id: { type: ['integer', 'null'] },
    created_at: { type: 'string' }, last_used_at: { type: ['string', 'null'] }, revoked_at: { type: ['string', 'null'] },
  },
} as const;
const userSchema = {
  type: 'object',
  properties: { id: { type: 'integer' }, username: { type: 'string' }, role: { type: 'string' }, disabled: { type: 'boolean' }, created_at: { type: 'string' } },
} as const;
const errorSchema = { type: 'object', properties: { error: { type: 'object', properties: { code: { type: 'string' }, message: { type: 'string' } } } } } as const;

const sldSchema = { anyOf: [{ type: 'string' }, { type: 'object', additionalProperties: { type: 'number' } }] } as const;
const policySchema = {
  type: 'object',
  properties: {
    source: { type: 'string' },
    version: { type: 'integer' },
    roles: {
      type: 'array',
      items: { type: 'object', properties: { name: { type: 'string' }, max_intensity: { type: 'integer' }, sexual: { type: 'boolean' }, consent_workflow: { type: 'boolean' } } },
    },
    sexual: { type: 'object', properties: { enabled: { type: 'boolean' } } },
    levels: {
      type: 'array',
      items: { type: 'object', properties: { level: { type: 'integer' }, adapter_strength: { type: 'number' }, cfg_scale_max: { type: ['number', 'null'] }, sld_when_clamped: sldSchema } },
    },
    hard_blocked: { type: 'array', items: { type: 'object', properties: { category: { type: 'string' }, fixed: { type: 'boolean' } } } },
    protected_persons: { type: 'integer' },
    output_checks: {
      type: 'object',
      properties: {
        nsfw: { type: 'object', properties: { thresholds: { type: 'object', properties: { porn: { type: 'number' }, hentai: { type: 'number' }, sexy: { type: 'number' } } }, action: { type: 'string' } } },
        min_face_age: { type: 'number' }, likeness_threshold: { type: 'number' }, min_face_score: { type: 'number' }, photo_threshold: { type: 'number' },
      },
    },
    semantic: { type: 'object', properties: { enabled: { type: 'boolean' }, thresholds: { type: 'object', additionalProperties: { type: 'number' } } } },
    audit: { type: 'object', properties: { prompt_storage: { type: 'string' } } },
  },
} as const;

/**
 * The policy as admins see it. Built field by field (never a spread of the policy) so a
 * secret added to the policy later cannot leak: the audit salt lives in the environment
 * and only the storage mode is shown; the protected persons list is counted, not listed.
 */
export function policyView(policy: Policy) {
  const o = policy.outputChecks;
  return {
    source: policy.source,
    version: policy.version,
    roles: Object.entries(policy.roles).map(([name, r]) => ({ name, max_intensity: r.maxIntensity, sexual: r.sexual, consent_workflow: r.consentWorkflow })),
    sexual: { enabled: policy.categories.sexual.enabled },
    levels: policy.categories.graphic_injury.levels.map((l) => ({
      level: l.level, adapter_strength: l.adapterStrength, cfg_scale_max: l.cfgScaleMax ?? null, sld_when_clamped: l.sldWhenClamped,
    })),
    // Hard-blocked categories are not policy settings: no file, role or request changes them.
    hard_blocked: HARD_BLOCKED_CATEGORIES.map((category) => ({ category, fixed: true })),
    protected_persons: policy.protectedPersons.length,
    output_checks: {
      nsfw: { thresholds: { ...o.nsfw.thresholds }, action: o.nsfw.action },
      min_face_age: o.minFaceAge, likeness_threshold: o.likeness.cosineThreshold, min_face_score: o.minFaceScore, photo_threshold: o.photoThreshold,
    },
    semantic: { enabled: policy.semantic.enabled, thresholds: { ...policy.semantic.thresholds } },
    audit: { prompt_storage: policy.audit.promptStorage },
  };
}

export function registerAdminRoutes(app: FastifyInstance, ctx: ServiceContext): void {
  const { store, roles, components } = ctx;
  const keyView = (k: ReturnType<typeof store.listKeys>[number]) => ({ ...k, created_at: iso(k.created_at)!, last_used_at: iso(k.last_used_at), revoked_at: iso(k.revoked_at) });
  const userView = (u: ReturnType<typeof store.listUsers>[number]) => ({ ...u, disabled: u.disabled !== 0, created_at: iso(u.created_at)! });
  const audit = (callerId: string, role: string, detail: Record<string, unknown>) =>
    void components.audit?.record({ kind: 'admin', caller: callerId, role, detail });

  app.get('/api/v1/admin/keys', {
    config: admin,
    schema: { tags: ['admin'], summary: 'API keys (never the secrets)', response: { 200: { type: 'object', properties: { keys: { type: 'array', items: keySchema } } } } },
  }, async () => ({ keys: store.listKeys().map(keyView) }));

  app.post<{ Body: { role: string; name: string; username?: string } }>('/api/v1/admin/keys', {
    config: admin,
    schema: {
      tags: ['admin'], summary: 'Create an API key; the key is shown once',
      body: { type: 'object', required: ['role'], additionalProperties: false, properties: { role: { type: 'string' }, name: { type: 'string', maxLength: 128, default: '' }, username: { type: 'string' } } },
      response: { 201: { type: 'object', properties: { key: { type: 'string' }, id: { type: 'string' }, role: { type: 'string' }, name: { type: 'string' } } }, 422: errorSchema },
    },
  }, async (req, reply) => {
    if (!roles.has(req.body.role)) return sendError(req, reply, 422, 'unknown_role', `unknown role '${req.body.role}'; roles: ${roles.names().join(', ')}`);
    let userId: number | null = null;
    if (req.body.username) {
      const u = store.getUser(req.body.username);
      if (!u) return sendError(req, reply, 422, 'unknown_user', `no user '${req.body.username}'`);
      userId = u.id;
    }
    const { key, row } = store.createKey(req.body.role, req.body.name, userId);
    audit(req.caller!.id, req.caller!.role, { action: 'key_create', key_id: row.id, role: row.role });
    return reply.code(201).send({ key, id: row.id, role: row.role, name: row.name });
  });

  app.post<{ Params: { id: string } }>('/api/v1/admin/keys/:id/revoke', {
    config: admin,
    schema: { tags: ['admin'], summary: 'Revoke an API key', params: { type: 'object', properties: { id: { type: 'string' } } }, response: { 200: keySchema, 404: errorSchema } },
  }, async (req, reply) => {
    if (!store.getKey(req.params.id)) return sendError(req, reply, 404, 'unknown_key', 'no such key');
    store.revokeKey(req.params.id);
    audit(req.caller!.id, req.caller!.role, { action: 'key_revoke', key_id: req.params.id });
    return keyView(store.getKey(req.params.id)!);
  });

  app.post<{ Params: { id: string } }>('/api/v1/admin/keys/:id/rotate', {
    config: admin,
    schema: {
      tags: ['admin'], summary: 'Revoke a key and issue a new one with the same name and role',
      params: { type: 'object', properties: { id: { type: 'string' } } },
      response: { 201: { type: 'object', properties: { key: { type: 'string' }, id: { type: 'string' }, role: { type: 'string' }, name: { type: 'string' } } }, 404: errorSchema, 409: errorSchema },
    },
  }, async (req, reply) => {
    try {
      const { key, row } = store.rotateKey(req.params.id);
      audit(req.caller!.id, req.caller!.role, { action: 'key_rotate', old_key_id: req.params.id, key_id: row.id });
      return reply.code(201).send({ key, id: row.id, role: row.role, name: row.name });
    } catch (err) {
      if (err instanceof RedlineError) return sendError(req, reply, err.code === 'unknown_key' ? 404 : 409, err.code, err.message);
      throw err;
    }
  });

  app.get('/api/v1/admin/policy', {
    config: admin,
    schema: { tags: ['admin'], summary: 'The content policy in force (no secrets)', response: { 200: policySchema, 501: errorSchema } },
  }, async (req, reply) => {
    if (!components.policy) return sendError(req, reply, 501, 'policy_unavailable', 'this server was started with components that do not publish their policy; see the policy file it was started with (REDLINE_POLICY) and docs/policy.md');
    return policyView(components.policy);
  });

  app.get('/api/v1/admin/users', {
    config: admin,
    schema: { tags: ['admin'], summary: 'Users', response: { 200: { type: 'object', properties: { users: { type: 'array', items: userSchema } } } } },
  }, async () => ({ users: store.listUsers().map(userView) }));

  app.post<{ Body: { username: string; password: string; role: string } }>('/api/v1/admin/users', {
    config: admin,
    schema: {
      tags: ['admin'], summary: 'Create a studio user',
      body: { type: 'object', required: ['username', 'password', 'role'], additionalProperties: false, properties: { username: { type: 'string' }, password: { type: 'string', maxLength: 1024 }, role: { type: 'string' } } },
      response: { 201: userSchema, 422: errorSchema },
    },
  }, async (req, reply) => {
    if (!roles.has(req.body.role)) return sendError(req, reply, 422, 'unknown_role', `unknown role '${req.body.role}'; roles: ${roles.names().join(', ')}`);
    try {
      const u = await store.createUser(req.body.username, req.body.password, req.body.role);
      audit(req.caller!.id, req.caller!.role, { action: 'user_create', username: u.username, role: u.role });
      return reply.code(201).send(userView(u));
    } catch (err) {
      if (err instanceof RedlineError) return sendError(req, reply, 422, err.code, err.message);
      throw err;
    }
  });

  app.patch<{ Params: { username: string }; Body: { role?: string; disabled?: boolean; password?: string } }>('/api/v1/admin/users/:username', {
    config: admin,
    schema: {
      tags: ['admin'], summary: 'Change a user\'s role, disable or enable them, or set a new password',
      params: { type: 'object', properties: { username: { type: 'string' } } },
      body: { type: 'object', additionalProperties: false, properties: { role: { type: 'string' }, disabled: { type: 'boolean' }, password: { type: 'string', maxLength: 1024 } } },
      response: { 200: userSchema, 404: errorSchema, 422: errorSchema },
    },
  }, async (req, reply) => {
    if (req.body.role !== undefined && !roles.has(req.body.role)) return sendError(req, reply, 422, 'unknown_role', `unknown role '${req.body.role}'`);
    try {
      const u = await store.updateUser(req.params.username, req.body);
      audit(req.caller!.id, req.caller!.role, { action: 'user_update', username: u.username, role: u.role, disabled: u.disabled !== 0, password_changed: req.body.password !== undefined });
      return userView(u);
    } catch (err) {
      if (err instanceof RedlineError) return sendError(req, reply, err.code === 'unknown_user' ? 404 : 422, err.code, err.message);
      throw err;
    }
  });

  const sinceQuery = {
    type: 'object',
    properties: { since: { type: 'string', format: 'date-time' }, limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } },
  } as const;
  const sinceMs = (s?: string) => (s ? Date.parse(s) : 0);

  app.get<{ Querystring: { since?: string; limit: number } }>('/api/v1/admin/blocks', {
    config: admin,
    schema: {
      tags: ['admin'], summary: 'Refused prompts and blocked images, newest first',
      querystring: sinceQuery,
      response: {
        200: {
          type: 'object',
          properties: {
            blocks: { type: 'array', items: { type: 'object', properties: { id: { type: 'integer' }, at: { type: 'string' }, caller: { type: 'string' }, role: { type: 'string' }, stage: { type: 'string' }, categories: { type: 'array', items: { type: 'string' } }, reason: { type: 'string' }, job_id: { type: ['string', 'null'] } } } },
            by_category: { type: 'object', additionalProperties: { type: 'integer' } },
          },
        },
      },
    },
  }, async (req) => {
    const rows = store.listBlocks(req.query.limit, sinceMs(req.query.since));
    const byCategory: Record<string, number> = {};
    const blocks = rows.map((b) => {
      const categories = JSON.parse(b.categories) as string[];
      for (const c of categories) byCategory[c] = (byCategory[c] ?? 0) + 1;
      return { ...b, at: iso(b.at)!, categories };
    });
    return { blocks, by_category: byCategory };
  });

  app.get<{ Querystring: { since?: string; limit: number } }>('/api/v1/admin/blocks/top-callers', {
    config: admin,
    schema: {
      tags: ['admin'], summary: 'Callers with the most blocks',
      querystring: sinceQuery,
      response: { 200: { type: 'object', properties: { callers: { type: 'array', items: { type: 'object', properties: { caller: { type: 'string' }, role: { type: 'string' }, blocks: { type: 'integer' }, last_at: { type: 'string' } } } } } } },
    },
  }, async (req) => ({
    callers: store.topBlockedCallers(req.query.limit, sinceMs(req.query.since)).map((c) => ({ ...c, last_at: iso(c.last_at)! })),
  }));

  type AuditQuerystring = {
    caller?: string; kind?: string; q?: string; since?: string; until?: string;
    verdict?: 'allow' | 'clamp' | 'refuse'; category?: string; before?: number; limit: number;
    request_id?: string; output?: string;
  };
  app.get<{ Querystring: AuditQuerystring }>('/api/v1/admin/audit', {
    config: admin,
    schema: {
      tags: ['admin'],
      summary: 'Search the audit log, newest first; prompts appear as stored (text or salted hash, per policy)',
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: {
          caller: { type: 'string', maxLength: 256 },
          kind: { type: 'string', maxLength: 64 },
          q: { type: 'string', maxLength: 256, description: 'text in a refusal or block reason' },
          since: { type: 'string', format: 'date-time' },
          until: { type: 'string', format: 'date-time' },
          verdict: { type: 'string', enum: ['allow', 'clamp', 'refuse'] },
          category: { type: 'string', maxLength: 64 },
          request_id: { type: 'string', maxLength: 64, description: 'a job id, or the request_id a refusal answered with: that request\'s screening, generation, block and consent rows' },
          output: { type: 'string', pattern: '^[0-9a-fA-F]{64}$', description: 'SHA-256 of a returned image: its generation row' },
          before: { type: 'integer', minimum: 1, description: 'next_before of the previous page' },
          limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
        },
      },
      response: {
        200: {
          type: 'object',
          properties: {
            entries: { type: 'array', items: { type: 'object', additionalProperties: true } },
            next_before: { type: ['integer', 'null'] },
          },
        },
        501: errorSchema,
      },
    },
  }, async (req, reply) => {
    const search = components.audit?.search;
    if (!search) return sendError(req, reply, 501, 'audit_unavailable', 'no audit log with search is installed on this server');
    const q = req.query;
    // One row more than the page tells whether an older page exists.
    const query: ServiceAuditSearch = {
      limit: q.limit + 1,
      ...(q.caller ? { caller: q.caller } : {}), ...(q.kind ? { kind: q.kind } : {}),
      ...(q.q ? { text: q.q } : {}), ...(q.since ? { since: q.since } : {}), ...(q.until ? { until: q.until } : {}),
      ...(q.verdict ? { verdict: q.verdict } : {}), ...(q.category ? { category: q.category } : {}),
      ...(q.before !== undefined ? { before: q.before } : {}),
      ...(q.request_id ? { requestId: q.request_id } : {}), ...(q.output ? { output: q.output } : {}),
    };
    const found = await search.call(components.audit, query);
    const entries = found.slice(0, q.limit);
    const lastSeq = entries[entries.length - 1]?.seq;
    return { entries, next_before: found.length > q.limit && typeof lastSeq === 'number' ? lastSeq : null };
  });
}
