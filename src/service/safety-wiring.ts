import type { AuditLog } from '../safety/audit/audit-log.ts';
import type { Policy } from '../safety/policy/policy.ts';
import type { Screener as SafetyScreener } from '../safety/screen/screener.ts';
import type { AuditSink, RoleCaps, Screener, ScreeningInput, ScreeningResult } from './backend.ts';
import { builtinRoles } from './roles.ts';

// Adapters from the safety layer (src/safety) to the service's seam (backend.ts).

/**
 * The policy screener as the service's Screener. The wording decides the intensity unless
 * the request names one; either way the effective level is at most the role's cap, and a
 * wording that asks for more than what is generated makes the verdict 'clamp' (the
 * pipeline then applies safe guidance).
 */
export function serviceScreener(screener: SafetyScreener): Screener {
  return {
    async screen(input: ScreeningInput): Promise<ScreeningResult> {
      const r = await screener.screenAsync({ prompt: input.prompt, negativePrompt: input.negativePrompt, loras: input.adapters }, input.role);
      const categories = r.categories.map((c) => c.category);
      if (r.verdict === 'refuse') {
        return { verdict: 'refuse', requestedIntensity: r.intensity, effectiveIntensity: 0, categories, reason: r.reason ?? 'This request cannot be generated on this server.' };
      }
      const requested = input.requestedIntensity ?? r.intensity;
      const cap = Math.min(r.cap, input.roleCap);
      const effective = Math.min(requested, cap);
      const clamped = effective < Math.max(requested, r.intensity);
      return {
        verdict: clamped ? 'clamp' : 'allow',
        requestedIntensity: Math.max(requested, r.intensity),
        effectiveIntensity: effective,
        categories,
        reason: r.reason ?? (clamped ? `Intensity lowered to ${effective}, the limit for your role.` : ''),
      };
    },
  };
}

/** Role caps from the policy; request-size and rate limits from the built-in table. */
export function rolesFromPolicy(policy: Policy): Record<string, RoleCaps> {
  const out: Record<string, RoleCaps> = {};
  for (const [name, rp] of Object.entries(policy.roles)) {
    // A role the built-in table does not know gets creator limits and no admin rights.
    const base = builtinRoles[name] ?? { ...builtinRoles.creator!, canSwitchModel: false };
    out[name] = { ...base, name, maxIntensity: rp.maxIntensity, canGenerate: base.canGenerate };
  }
  return out;
}

/** The hash-chained audit log as the service's AuditSink (append only; no search yet). */
export function auditSink(log: AuditLog): AuditSink {
  return {
    record(e) {
      const kind = e.kind === 'screening' ? 'screen' : e.kind === 'generation' ? 'generate' : e.kind;
      log.append({
        kind,
        caller: e.caller,
        role: e.role,
        ...(e.prompt !== undefined ? { prompts: log.prompts(e.prompt, e.negativePrompt) } : {}),
        ...(e.verdict === 'allow' || e.verdict === 'clamp' || e.verdict === 'refuse' ? { verdict: e.verdict } : {}),
        ...(e.categories ? { categories: e.categories.map((category) => ({ category })) } : {}),
        ...(e.requestedIntensity !== undefined ? { requestedIntensity: e.requestedIntensity } : {}),
        ...(e.effectiveIntensity !== undefined ? { effectiveIntensity: e.effectiveIntensity } : {}),
        ...(e.kind === 'block' ? { blocks: (e.categories?.length ? e.categories : ['unspecified']).map((category) => ({ stage: String(e.detail?.stage ?? 'output'), category, reason: e.reason ?? '' })) } : {}),
        details: { ...(e.jobId ? { jobId: e.jobId } : {}), ...(e.detail ?? {}) },
      });
    },
  };
}
