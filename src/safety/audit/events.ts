// Builds audit events from screening results, honouring the log's prompt-storage mode.
import type { ScreenRequest, ScreenResult } from '../screen/screener.ts';
import type { AuditEvent, AuditLog } from './audit-log.ts';

/** The audit event for one screening (kind 'screen'), ready for `log.append`. */
export function screenEvent(log: AuditLog, caller: string, request: ScreenRequest, result: ScreenResult, requestId?: string): AuditEvent {
  return {
    kind: 'screen',
    caller,
    role: result.role,
    ...(requestId !== undefined ? { requestId } : {}),
    prompts: log.prompts(request.prompt, request.negativePrompt, request.loras),
    verdict: result.verdict,
    categories: result.categories.map((c) => ({
      category: c.category,
      hardBlocked: c.hardBlocked,
      source: c.source,
      rules: c.rules,
      evidence: log.evidence(c.evidence.map((e) => ({
        field: e.field, index: e.index, start: e.start, end: e.end, signal: e.signal, term: e.term, text: e.text, score: e.score, concept: e.concept,
      }))),
    })),
    requestedIntensity: result.intensity,
    effectiveIntensity: result.effectiveIntensity,
    blocks: result.verdict === 'refuse'
      ? [{ stage: 'prompt', category: result.categories[0]?.category ?? 'unknown', reason: result.reason ?? '' }]
      : undefined,
    details: result.persons.length ? { persons: result.persons } : undefined,
  };
}

export interface GenerationRecord {
  caller: string;
  /** The job id (see AuditEvent.requestId). */
  requestId?: string;
  request: ScreenRequest;
  screen: ScreenResult;
  model?: AuditEvent['model'];
  adapters?: AuditEvent['adapters'];
  /** SHA-256 of each image returned or stored. */
  outputs?: AuditEvent['outputs'];
  /** Output checks that blocked an image (with their scores). */
  blocks?: AuditEvent['blocks'];
  details?: Record<string, unknown>;
}

/** The audit event for one generation (kind 'generate', or 'block' when every image was blocked). */
export function generationEvent(log: AuditLog, g: GenerationRecord): AuditEvent {
  const base = screenEvent(log, g.caller, g.request, g.screen, g.requestId);
  const blocked = (g.blocks?.length ?? 0) > 0 && (g.outputs?.length ?? 0) === 0;
  return {
    ...base,
    kind: blocked ? 'block' : 'generate',
    model: g.model,
    adapters: g.adapters,
    outputs: g.outputs,
    blocks: [...(base.blocks ?? []), ...(g.blocks ?? [])].length ? [...(base.blocks ?? []), ...(g.blocks ?? [])] : undefined,
    details: { ...(base.details ?? {}), ...(g.details ?? {}) },
  };
}
