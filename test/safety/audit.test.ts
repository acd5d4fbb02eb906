import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { AuditLog, canonicalJson, rowHash, GENESIS_HASH } from '../../src/safety/audit/audit-log.ts';
import { generationEvent, screenEvent } from '../../src/safety/audit/events.ts';
import { defaultPolicy } from '../../src/safety/policy/policy.ts';
import { Screener } from '../../src/safety/screen/screener.ts';
import { repoRoot } from '../helpers/golden.ts';

function freshLog(rows = 5): { path: string; log: AuditLog } {
  const dir = mkdtempSync(join(tmpdir(), 'redline-audit-'));
  const path = join(dir, 'audit.sqlite');
  let t = Date.UTC(2026, 0, 1);
  const log = new AuditLog(path, { now: () => new Date((t += 1000)) });
  for (let i = 1; i <= rows; i++) {
    log.append({ kind: 'screen', caller: `user${i}`, role: 'creator', verdict: 'allow', requestedIntensity: i % 4, effectiveIntensity: i % 3 });
  }
  return { path, log };
}

/** Opens the file behind the log's back and removes the append-only triggers. */
function tamper(path: string, sql: string[]): void {
  const db = new Database(path);
  db.exec('DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete; DROP TRIGGER head_no_delete; DROP TRIGGER head_forward_only;');
  for (const s of sql) db.exec(s);
  db.close();
}

describe('audit log', () => {
  it('chains rows: each hash covers the previous hash and the canonical JSON of the row', () => {
    const { log } = freshLog(3);
    const rows = [...log.rows()];
    expect(rows.map((r) => r.seq)).toEqual([1, 2, 3]);
    expect(rows[0]!.prevHash).toBe(GENESIS_HASH);
    expect(rows[1]!.prevHash).toBe(rows[0]!.hash);
    const r = rows[1]!;
    expect(r.hash).toBe(rowHash(r.prevHash, r.seq, r.ts, r.kind, canonicalJson(r.event)));
    expect(canonicalJson({ b: 1, a: [{ d: 2, c: null }] })).toBe('{"a":[{"c":null,"d":2}],"b":1}');
    const v = log.verify();
    expect(v).toMatchObject({ ok: true, rows: 3, headSeq: 3, headHash: rows[2]!.hash, problems: [] });
    log.close();
  });

  it('refuses UPDATE and DELETE through SQL (triggers)', () => {
    const { path, log } = freshLog(2);
    log.close();
    const db = new Database(path);
    expect(() => db.exec("UPDATE audit SET kind = 'x' WHERE seq = 1")).toThrow(/append-only/);
    expect(() => db.exec('DELETE FROM audit WHERE seq = 2')).toThrow(/append-only/);
    expect(() => db.exec('DELETE FROM head')).toThrow(/cannot be deleted/);
    expect(() => db.exec('UPDATE head SET seq = 1')).toThrow(/only moves forward/);
    db.close();
  });

  it('finds an edited row and names it', () => {
    const { path, log } = freshLog();
    tamper(path, [`UPDATE audit SET event = replace(event, '"user3"', '"admin"') WHERE seq = 3`]);
    const v = log.verify();
    expect(v.ok).toBe(false);
    expect(v.problems).toContainEqual(expect.objectContaining({ seq: 3, problem: 'hash_mismatch' }));
    expect(v.problems.every((p) => p.seq === 3)).toBe(true);
    log.close();
  });

  it('finds an edited row whose own hash was recomputed: the next row no longer links', () => {
    const { path, log } = freshLog();
    const r3 = [...log.rows()][2]!;
    const event = { ...r3.event, verdict: 'refuse' };
    const hash = rowHash(r3.prevHash, 3, r3.ts, r3.kind, canonicalJson(event));
    tamper(path, [`UPDATE audit SET event = '${canonicalJson(event)}', hash = '${hash}' WHERE seq = 3`]);
    const v = log.verify();
    expect(v.ok).toBe(false);
    expect(v.problems).toContainEqual(expect.objectContaining({ seq: 4, problem: 'broken_link' }));
    log.close();
  });

  it('finds a deleted row', () => {
    const { path, log } = freshLog();
    tamper(path, ['DELETE FROM audit WHERE seq = 2']);
    const v = log.verify();
    expect(v.ok).toBe(false);
    expect(v.problems).toContainEqual(expect.objectContaining({ seq: 2, problem: 'sequence_gap' }));
    expect(v.problems.find((p) => p.seq === 2)!.message).toMatch(/row 2 missing/);
    log.close();
  });

  it('finds reordered rows (contents swapped between positions)', () => {
    const { path, log } = freshLog();
    tamper(path, [
      'UPDATE audit SET seq = -2 WHERE seq = 2',
      'UPDATE audit SET seq = 2 WHERE seq = 3',
      'UPDATE audit SET seq = 3 WHERE seq = -2',
    ]);
    const v = log.verify();
    expect(v.ok).toBe(false);
    const named = new Set(v.problems.map((p) => p.seq));
    expect(named.has(2) && named.has(3)).toBe(true);
    log.close();
  });

  it('finds a truncated log from the head record', () => {
    const { path, log } = freshLog();
    tamper(path, ['DELETE FROM audit WHERE seq >= 4']);
    const v = log.verify();
    expect(v.ok).toBe(false);
    expect(v.problems).toContainEqual(expect.objectContaining({ seq: 4, problem: 'truncated' }));
    log.close();
  });

  it('finds truncation even when the head record was rewritten too, given the head kept elsewhere', () => {
    const { path, log } = freshLog();
    const before = log.verify();
    const r3 = [...log.rows()][2]!;
    tamper(path, ['DELETE FROM audit WHERE seq >= 4', `UPDATE head SET seq = 3, hash = '${r3.hash}'`]);
    expect(log.verify().ok).toBe(true); // consistent on its own...
    const v = log.verify({ seq: before.headSeq, hash: before.headHash });
    expect(v.ok).toBe(false); // ...but not with the head the operator kept
    expect(v.problems).toContainEqual(expect.objectContaining({ seq: 4, problem: 'truncated' }));
    log.close();
  });

  it('stores only salted hashes of prompts (and no matched text) in hash mode', () => {
    const dir = mkdtempSync(join(tmpdir(), 'redline-audit-'));
    const policy = defaultPolicy();
    policy.audit.promptStorage = 'hash';
    expect(() => AuditLog.forPolicy(join(dir, 'a.sqlite'), policy, {})).toThrow(/REDLINE_AUDIT_SALT/);
    const log = AuditLog.forPolicy(join(dir, 'a.sqlite'), policy, { REDLINE_AUDIT_SALT: 's3cret' });
    const request = { prompt: 'a knight with a bleeding wound', negativePrompt: 'lowres' };
    const result = new Screener(policy).screen(request, 'creator');
    const row = log.append(screenEvent(log, 'alice', request, result));
    const json = JSON.stringify(row.event);
    expect(json).not.toContain('knight');
    expect(json).not.toContain('bleeding');
    expect(row.event.prompts!.prompt).toMatch(/^hmac-sha256:[0-9a-f]{64}$/);
    expect(row.event).toMatchObject({ verdict: 'allow', requestedIntensity: 2, effectiveIntensity: 2, role: 'creator', caller: 'alice' });
    // Same prompt, same salt: same hash (so an operator can look a prompt up).
    expect(log.prompts(request.prompt).prompt).toBe(row.event.prompts!.prompt);
    log.close();
  });

  it('records refusals with category, evidence and reason in text mode', () => {
    const { log } = freshLog(0);
    const request = { prompt: 'a toddler with a bleeding gash' };
    const result = new Screener(defaultPolicy()).screen(request, 'admin');
    const row = log.append(screenEvent(log, 'bob', request, result));
    expect(row.event.verdict).toBe('refuse');
    expect(row.event.blocks![0]).toMatchObject({ stage: 'prompt', category: 'minors_graded' });
    expect(row.event.categories![0]!.evidence!.map((e) => e.text)).toContain('toddler');
    expect(row.event.prompts).toEqual({ storage: 'text', prompt: request.prompt });
    log.close();
  });
});

describe('generation events', () => {
  it('record model and adapter hashes, output hashes, and output-check blocks with scores', () => {
    const { log } = freshLog(0);
    const request = { prompt: 'a knight with a bleeding wound', loras: ['blood_framework'] };
    const screen = new Screener(defaultPolicy()).screen(request, 'viewer');
    const ok = log.append(generationEvent(log, {
      caller: 'carol', request, screen,
      model: { name: 'sd15', sha256: 'a'.repeat(64), shortHash: 'aaaaaaaaaa' },
      adapters: [{ name: 'blood_framework', sha256: 'b'.repeat(64), strength: 0 }],
      outputs: [{ sha256: 'c'.repeat(64), width: 512, height: 512 }],
      details: { seed: 42 },
    }));
    expect(ok.event).toMatchObject({ kind: 'generate', verdict: 'clamp', requestedIntensity: 2, effectiveIntensity: 0, details: { seed: 42 } });
    expect(ok.event.outputs![0]!.sha256).toBe('c'.repeat(64));
    const blocked = log.append(generationEvent(log, {
      caller: 'carol', request, screen, outputs: [],
      blocks: [{ stage: 'output', category: 'minors_graded', reason: 'face estimated under 25', scores: { age: 14.2 } }],
    }));
    expect(blocked.event.kind).toBe('block');
    expect(blocked.event.blocks![0]!.scores).toEqual({ age: 14.2 });
    expect(log.verify().ok).toBe(true);
    log.close();
  });
});

describe('request ids in audit rows', () => {
  it('rows written before requestId existed still verify beside new rows; editing a requestId breaks the chain at that row', () => {
    // Rows 1-5 are the old shape (no requestId); 6-7 carry one.
    const { path, log } = freshLog(5);
    log.append({ kind: 'screen', caller: 'user6', role: 'creator', requestId: 'req-6', verdict: 'refuse' });
    log.append({ kind: 'generate', caller: 'user7', role: 'creator', requestId: 'job-7', outputs: [{ sha256: 'a'.repeat(64) }] });
    const rows = [...log.rows()];
    expect(rows.slice(0, 5).every((r) => !('requestId' in r.event))).toBe(true);
    expect(rows[5]!.event.requestId).toBe('req-6');
    expect(log.verify()).toMatchObject({ ok: true, rows: 7, problems: [] });
    log.close();

    tamper(path, [`UPDATE audit SET event = replace(event, '"req-6"', '"req-X"') WHERE seq = 6`]);
    const reopened = new AuditLog(path);
    const v = reopened.verify();
    expect(v.ok).toBe(false);
    expect(v.problems).toEqual([expect.objectContaining({ seq: 6, problem: 'hash_mismatch' })]);
    reopened.close();
  });

  it('adding a requestId to an old row breaks the chain too', () => {
    const { path, log } = freshLog(3);
    log.close();
    tamper(path, [`UPDATE audit SET event = replace(event, '{"caller"', '{"requestId":"job-1","caller"') WHERE seq = 2`]);
    const reopened = new AuditLog(path);
    expect(reopened.verify().problems.map((p) => [p.seq, p.problem])).toEqual([[2, 'hash_mismatch']]);
    reopened.close();
  });

  it('search by requestId finds new rows and old rows that kept the job id in details.jobId; output finds an image\'s row', () => {
    const { log } = freshLog(2);
    log.append({ kind: 'generate', caller: 'old', role: 'creator', details: { jobId: 'job-old' } });
    log.append({ kind: 'screen', caller: 'new', role: 'creator', requestId: 'job-new', verdict: 'clamp' });
    log.append({ kind: 'generate', caller: 'new', role: 'creator', requestId: 'job-new', outputs: [{ sha256: 'b'.repeat(64) }], details: { jobId: 'job-new' } });
    log.append({ kind: 'screen', caller: 'other', role: 'creator', requestId: 'job-other', verdict: 'allow' });
    expect(log.search({ requestId: 'job-old' }).rows.map((r) => r.seq)).toEqual([3]);
    expect(log.search({ requestId: 'job-new' }).rows.map((r) => r.seq)).toEqual([5, 4]);
    expect(log.search({ requestId: 'job-new', kind: 'screen' }).rows.map((r) => r.event.verdict)).toEqual(['clamp']);
    expect(log.search({ requestId: 'nope' }).rows).toEqual([]);
    expect(log.search({ output: 'B'.repeat(64) }).rows.map((r) => r.seq)).toEqual([5]);
    expect(() => log.search({ output: 'not-a-hash' })).toThrow(/not a SHA-256 hex digest/);
    log.close();
  });
});

describe('redline audit', () => {
  const cli = join(repoRoot, 'bin', 'redline.js');

  it('verify exits 0 on an intact log and 1 naming the tampered row; export writes JSONL', () => {
    const { path, log } = freshLog(4);
    log.close();
    const ok = spawnSync(process.execPath, [cli, 'audit', 'verify', '--db', path], { encoding: 'utf8' });
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/^OK: 4 rows, head 4:[0-9a-f]{64}/m);

    const out = join(mkdtempSync(join(tmpdir(), 'redline-export-')), 'audit.jsonl');
    execFileSync(process.execPath, [cli, 'audit', 'export', '--db', path, '--out', out], { encoding: 'utf8', stdio: 'pipe' });
    const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { seq: number; ts: string; kind: string; event: unknown; prev_hash: string; hash: string });
    expect(lines.map((l) => l.seq)).toEqual([1, 2, 3, 4]);
    for (const l of lines) expect(l.hash).toBe(rowHash(l.prev_hash, l.seq, l.ts, l.kind, canonicalJson(l.event)));

    tamper(path, ['UPDATE audit SET ts = \'2020-01-01T00:00:00.000Z\' WHERE seq = 2']);
    const bad = spawnSync(process.execPath, [cli, 'audit', 'verify', '--db', path], { encoding: 'utf8' });
    expect(bad.status).toBe(1);
    expect(bad.stdout).toMatch(/^row 2: hash_mismatch/m);
    expect(bad.stdout).toMatch(/^TAMPERED/m);
  });
});
