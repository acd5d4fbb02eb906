// Builds audit events from screening results, honouring the log's prompt-storage mode.
import type { ScreenRequest, ScreenResult } from '../screen/screener.ts';
import type { AuditEvent, AuditLog } from './audit-log.ts';

/** The audit event for one screening (kind 'screen'), ready for `log.append`. */
export function screenEvent(log: AuditLog, caller: string, request: ScreenRequest, result: ScreenResult): AuditEvent {
  return {
    kind: 'screen',
    caller,
    role: result.role,
    prompts: log.prompts(request.prompt, request.negativePrompt, request.loras),
    verdict: result.verdict,
    categories: result.categories.map((c) => ({
      category: c.category,
      hardBlocked: c.hardBlocked,
      source: c.source,
      evidence: log.evidence(c.evidence.map((e) => ({
        field: e.field, index: e.index, start: e.start, end: e.end, signal: e.signal, text: e.text, score: e.score,
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
