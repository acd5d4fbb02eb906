import sharp from 'sharp';
import type { AuditLog, AuditQuery } from '../safety/audit/audit-log.ts';
import { checkInitImage, checkOutputImage, type ImageSafetyChecks } from '../safety/output/index.ts';
import type { RgbImage } from '../safety/output/image.ts';
import { applyProvenance, type SigningIdentity } from '../safety/provenance/index.ts';
import type { Policy } from '../safety/policy/policy.ts';
import type { Screener as SafetyScreener } from '../safety/screen/screener.ts';
import type {
  AuditSearch, AuditSink, OutputChecker, ProvenanceMarker, RoleCaps, Screener, ScreeningInput, ScreeningResult,
} from './backend.ts';
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
      const categories = r.categories.map(({ category, source, rules, evidence }) => ({
        category,
        source,
        rules,
        evidence: evidence.map(({ field, index, start, end, signal, term, text, score, concept }) => ({
          field, start, end, signal, text,
          ...(index !== undefined ? { index } : {}), ...(term !== undefined ? { term } : {}),
          ...(score !== undefined ? { score } : {}), ...(concept !== undefined ? { concept } : {}),
        })),
      }));
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

/** What the admin audit route may ask beyond the seam's AuditSearch. */
export type ServiceAuditSearch = AuditSearch & Pick<AuditQuery, 'verdict' | 'category' | 'until' | 'before' | 'requestId' | 'output'>;

/** The hash-chained audit log as the service's AuditSink (append, and search for admins). */
export function auditSink(log: AuditLog): AuditSink {
  return {
    record(e) {
      const kind = e.kind === 'screening' ? 'screen' : e.kind === 'generation' ? 'generate' : e.kind;
      log.append({
        kind,
        caller: e.caller,
        role: e.role,
        ...(e.requestId ?? e.jobId ? { requestId: e.requestId ?? e.jobId } : {}),
        ...(e.prompt !== undefined ? { prompts: log.prompts(e.prompt, e.negativePrompt) } : {}),
        ...(e.verdict === 'allow' || e.verdict === 'clamp' || e.verdict === 'refuse' ? { verdict: e.verdict } : {}),
        // Evidence goes through the log's own filter: no matched text or term under 'hash'.
        ...(e.categories ? {
          categories: e.categories.map(({ category, source, rules, evidence }) => ({
            category, ...(source ? { source } : {}), ...(rules?.length ? { rules } : {}),
            ...(evidence?.length ? { evidence: log.evidence(evidence) } : {}),
          })),
        } : {}),
        ...(e.requestedIntensity !== undefined ? { requestedIntensity: e.requestedIntensity } : {}),
        ...(e.effectiveIntensity !== undefined ? { effectiveIntensity: e.effectiveIntensity } : {}),
        ...(e.outputs?.length ? { outputs: e.outputs } : {}),
        ...(e.kind === 'block' ? { blocks: (e.categories?.length ? e.categories.map((c) => c.category) : ['unspecified']).map((category) => ({ stage: String(e.detail?.stage ?? 'output'), category, reason: e.reason ?? '' })) } : {}),
        // The reason of a screening is kept so admins can search for it; blocks carry theirs.
        details: { ...(e.jobId ? { jobId: e.jobId } : {}), ...(e.kind !== 'block' && e.reason ? { reason: e.reason } : {}), ...(e.detail ?? {}) },
      });
    },
    search(q: ServiceAuditSearch) {
      const page = log.search({
        limit: q.limit,
        ...(q.caller ? { caller: q.caller } : {}), ...(q.kind ? { kind: q.kind === 'screening' ? 'screen' : q.kind === 'generation' ? 'generate' : q.kind } : {}),
        ...(q.text ? { text: q.text } : {}), ...(q.since ? { since: q.since } : {}), ...(q.until ? { until: q.until } : {}),
        ...(q.verdict ? { verdict: q.verdict } : {}), ...(q.category ? { category: q.category } : {}),
        ...(q.before !== undefined ? { before: q.before } : {}),
        ...(q.requestId ? { requestId: q.requestId } : {}), ...(q.output ? { output: q.output } : {}),
      });
      // Rows as stored: prompts are text or salted hashes, as the policy chose when written.
      return page.rows.map((r) => ({ ...r.event, seq: r.seq, ts: r.ts, kind: r.kind, hash: r.hash }));
    },
  };
}

async function toRgb(png: Buffer): Promise<RgbImage> {
  const { data, info } = await sharp(png).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
}

/** Flattens nested score objects to 'a.b' -> number for the audit log and monitoring. */
function flatScores(value: unknown, prefix = '', out: Record<string, number> = {}): Record<string, number> {
  if (typeof value === 'number') out[prefix] = value;
  else if (Array.isArray(value)) value.forEach((v, i) => flatScores(v, `${prefix}[${i}]`, out));
  else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) flatScores(v, prefix ? `${prefix}.${k}` : k, out);
  }
  return out;
}

/**
 * The image checks (nsfw, face age, likeness) as the service's OutputChecker. For init
 * images the consent workflow is the caller's role's `consentWorkflow` flag in the policy
 * (server side) and the attestation reference is the one the request carried; a pass that
 * relied on it writes a 'consent' row with the reference to the audit log.
 */
export function serviceOutputChecker(checks: ImageSafetyChecks, opts: { policy?: Policy; log?: AuditLog } = {}): OutputChecker {
  return {
    async check(png, ctx) {
      const r = await checkOutputImage(checks, await toRgb(png), { intensity: ctx.intensity });
      const categories = r.reasons.map((x) => x.code);
      const reason = r.reasons.map((x) => x.message).join(' ');
      const scores = flatScores(r.scores);
      if (r.verdict === 'pass') return { action: 'pass', png, categories: [], reason: '', scores };
      if (r.verdict === 'blur' && r.image) {
        const blurred = await sharp(r.image.data, { raw: { width: r.image.width, height: r.image.height, channels: 3 } }).png().toBuffer();
        return { action: 'blur', png: blurred, categories, reason, scores };
      }
      return { action: 'block', png, categories, reason, scores };
    },
    async checkInput(png, ctx) {
      const attestation = ctx.request.consentAttestation;
      const workflowEnabled = opts.policy?.roles[ctx.role]?.consentWorkflow ?? false;
      const r = await checkInitImage(checks, await toRgb(png), {
        intensity: ctx.intensity,
        consent: { workflowEnabled, ...(attestation ? { attestationRef: attestation.ref } : {}) },
      });
      if (r.verdict === 'pass' && r.consentReference !== undefined && opts.log) {
        opts.log.append({
          kind: 'consent',
          caller: attestation?.caller ?? 'unknown',
          role: ctx.role,
          requestId: ctx.jobId,
          effectiveIntensity: ctx.intensity,
          details: { jobId: ctx.jobId, stage: 'input', attestationRef: r.consentReference, photographicFace: r.photographicFace, scores: flatScores(r.scores) },
        });
      }
      return { allowed: r.verdict === 'pass', reason: r.reasons.map((x) => x.message).join(' '), categories: r.reasons.map((x) => x.code) };
    },
  };
}

/** Provenance marks (parameters, XMP, C2PA, dwtDct watermark) on every returned image. */
export function serviceProvenance(identity: SigningIdentity, payload: Uint8Array): ProvenanceMarker {
  return {
    async mark(png, ctx) {
      const meta = await sharp(png).metadata();
      // dwtDct cannot carry a payload in images under 256x256; those get the other marks.
      const watermark = (meta.width ?? 0) >= 256 && (meta.height ?? 0) >= 256;
      const marked = await applyProvenance(png, {
        infotext: ctx.infotext,
        modelHash: ctx.info.modelHash ?? 'unknown',
        adapterHashes: ctx.info.adapterHashes ?? {},
        payload: watermark ? payload : null,
        identity,
      });
      return { png: marked, status: { parameters: true, xmp: true, c2pa: 'signed', watermark } };
    },
  };
}
