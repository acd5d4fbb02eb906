// The screening evidence (which lexicon signal and term, where in the prompt) reaches the
// service's audit rows for refusals and clamps, never the requester; the hash chain covers
// it, rows written before evidence was recorded still verify, and `redline audit export`
// carries it. Expected offsets are found in the prompt text here, and expected terms are
// the lexicon's own words (src/safety/screen/data/lexicon.yaml): inputs, not outputs.
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog, type AuditEvidence, type AuditRow } from '../../src/safety/audit/audit-log.ts';
import { defaultPolicy } from '../../src/safety/policy/policy.ts';
import { repoRoot } from '../helpers/golden.ts';
import { bearer, postJson, startPolicyHarness, tempDir, waitForJob, type Harness } from './support/harness.ts';
import { runCli } from './support/processes.ts';

const REFUSED = 'a ch1ld covered in bl00d'; // a minor with injury wording, spelt to evade
const CLAMPED = 'a zombie with a deep bleeeding w0und'; // level 3 wording; the creator cap is 2
const policy = defaultPolicy();

const cli = (...args: string[]) => runCli(args);
const span = (prompt: string, written: string) => ({ field: 'prompt', start: prompt.indexOf(written), end: prompt.indexOf(written) + written.length });
const screenRows = (log: AuditLog): AuditRow[] => [...log.rows()].filter((r) => r.kind === 'screen');
const evidenceOf = (row: AuditRow, category: string): AuditEvidence[] => row.event.categories!.find((c) => c.category === category)!.evidence!;

describe('audit evidence through the service, prompts stored as text', () => {
  const dataDir = tempDir('audit-evidence');
  const dbPath = join(dataDir, 'audit.db');
  let log: AuditLog;
  let h: Harness;
  let refusedBody = '';

  beforeAll(async () => {
    log = new AuditLog(dbPath);
    // A row as the service wrote screenings before evidence was recorded.
    log.append({ kind: 'screen', caller: 'key:old', role: 'creator', prompts: log.prompts('a knight with a bleeding cut'), verdict: 'allow', categories: [{ category: 'graphic_injury', source: 'lexicon' }], requestedIntensity: 2, effectiveIntensity: 2, details: {} });
    h = await startPolicyHarness({ policy, log, dataDir });
    const refused = await postJson(`${h.base}/api/v1/jobs`, { prompt: REFUSED, steps: 2, width: 64, height: 64 }, bearer(h.keys.creator));
    expect(refused.status).toBe(403);
    refusedBody = await refused.text();
    const clamped = await postJson(`${h.base}/api/v1/jobs`, { prompt: CLAMPED, steps: 2, width: 64, height: 64 }, bearer(h.keys.creator));
    expect(clamped.status).toBe(202);
    // its generation row comes when the job ends: wait, so the row count is fixed
    await waitForJob(h.base, h.keys.creator, ((await clamped.json()) as { id: string }).id);
  }, 60_000);
  afterAll(async () => {
    await h?.close();
    log?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("a refused request's row names the rule that fired, each matched span, its lexicon signal and the normalised term", () => {
    const row = screenRows(log).find((r) => r.event.verdict === 'refuse')!;
    expect(row.event.prompts?.prompt).toBe(REFUSED);
    // a clear minor term with injury wording (src/safety/screen/rules.ts)
    expect(row.event.categories!.find((c) => c.category === 'minors_graded')!.rules).toEqual(['clear_minor+injury']);
    const evidence = evidenceOf(row, 'minors_graded');
    expect(evidence).toContainEqual({ ...span(REFUSED, 'ch1ld'), text: 'ch1ld', signal: 'minor', term: 'child' });
    expect(evidence).toContainEqual({ ...span(REFUSED, 'bl00d'), text: 'bl00d', signal: 'injury', term: 'blood' });
    // the offsets index the prompt stored in the same row
    for (const c of row.event.categories!) for (const e of c.evidence!) expect(REFUSED.slice(e.start, e.end)).toBe(e.text);
  });

  it('the lexicon terms recorded are words of the lexicon entries with that signal', () => {
    const lexicon = readFileSync(join(repoRoot, 'src/safety/screen/data/lexicon.yaml'), 'utf8');
    expect(lexicon).toMatch(/- tag: minor\n\s+terms: \[child,/);
    expect(lexicon).toMatch(/- tag: injury\n(?:\s+level: \d\n)?\s+terms: \[[^\]]*\bblood\b/);
  });

  it("a clamped request's row carries the evidence of its graded wording", () => {
    const row = screenRows(log).find((r) => r.event.verdict === 'clamp')!;
    expect(row.event).toMatchObject({ requestedIntensity: 3, effectiveIntensity: 2 });
    expect(row.event.categories).toEqual([expect.objectContaining({ category: 'graphic_injury', source: 'lexicon', rules: ['injury_level'] })]);
    const evidence = evidenceOf(row, 'graphic_injury');
    expect(evidence).toContainEqual({ ...span(CLAMPED, 'w0und'), text: 'w0und', signal: 'injury', term: 'wound' });
    expect(evidence).toContainEqual({ ...span(CLAMPED, 'bleeeding'), text: 'bleeeding', signal: 'injury', term: 'bleeding' });
    expect(evidence).toContainEqual({ ...span(CLAMPED, 'deep'), text: 'deep', signal: 'intensify', term: 'deep' });
  });

  it('the requester is told the category, never the evidence', () => {
    expect(refusedBody).toMatch(/never produces/);
    expect(refusedBody).not.toMatch(/ch1ld|bl00d|"term"|"evidence"|"start"/);
  });

  it('the chain verifies, old evidence-free rows included, and `redline audit export` carries the evidence', () => {
    expect([...log.rows()].map((r) => r.kind)).toEqual(['screen', 'screen', 'screen', 'generate']);
    expect(log.verify()).toMatchObject({ ok: true, rows: 4 });
    const out = join(dataDir, 'export.jsonl');
    const exported = cli('audit', 'export', '--db', dbPath, '--out', out);
    expect(exported.status, exported.stderr).toBe(0);
    const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { seq: number; event: AuditRow['event']; hash: string });
    expect(lines.map((l) => l.seq)).toEqual([1, 2, 3, 4]);
    expect(lines[0]!.event.categories).toEqual([{ category: 'graphic_injury', source: 'lexicon' }]);
    const stored = [...log.rows()];
    for (const [i, l] of lines.entries()) {
      expect(l.event).toEqual(stored[i]!.event);
      expect(l.hash).toBe(stored[i]!.hash);
    }
    expect(evidenceOf({ event: lines[1]!.event } as AuditRow, 'minors_graded')).toContainEqual({ ...span(REFUSED, 'ch1ld'), text: 'ch1ld', signal: 'minor', term: 'child' });
    const verified = cli('audit', 'verify', '--db', dbPath);
    expect(verified.status, verified.stdout).toBe(0);
    expect(verified.stdout).toMatch(/^OK: 4 rows/m);
  });

  it('an edited evidence span breaks the chain, and `redline audit verify` names the row', () => {
    const seq = screenRows(log).find((r) => r.event.verdict === 'refuse')!.seq;
    const start = REFUSED.indexOf('ch1ld');
    const db = new Database(dbPath);
    db.exec('DROP TRIGGER audit_no_update');
    const changed = db.prepare(`UPDATE audit SET event = replace(event, '"start":${start}', '"start":${start + 1}') WHERE seq = ?`).run(seq);
    db.close();
    expect(changed.changes).toBe(1);
    expect(log.verify().problems).toEqual([expect.objectContaining({ seq, problem: 'hash_mismatch' })]);
    const verified = cli('audit', 'verify', '--db', dbPath);
    expect(verified.status).toBe(1);
    expect(verified.stdout).toMatch(new RegExp(`^row ${seq}: hash_mismatch`, 'm'));
  });
});

describe('audit evidence with prompts stored as salted hashes', () => {
  const dataDir = tempDir('audit-evidence-hash');
  let log: AuditLog;
  let h: Harness;
  beforeAll(async () => {
    log = new AuditLog(join(dataDir, 'audit.db'), { promptStorage: 'hash', salt: 'test-salt' });
    h = await startPolicyHarness({ policy, log, dataDir });
    expect((await postJson(`${h.base}/api/v1/jobs`, { prompt: REFUSED, steps: 2, width: 64, height: 64 }, bearer(h.keys.creator))).status).toBe(403);
  }, 60_000);
  afterAll(async () => {
    await h?.close();
    log?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('keeps the spans and signals but neither the matched text nor the term', () => {
    const row = screenRows(log)[0]!;
    expect(row.event.prompts?.prompt).toMatch(/^hmac-sha256:/);
    const evidence = evidenceOf(row, 'minors_graded');
    expect(evidence).toContainEqual({ ...span(REFUSED, 'ch1ld'), signal: 'minor' });
    expect(evidence).toContainEqual({ ...span(REFUSED, 'bl00d'), signal: 'injury' });
    expect(JSON.stringify(row.event)).not.toMatch(/ch1ld|bl00d|child|blood/);
    expect(log.verify().ok).toBe(true);
  });
});
