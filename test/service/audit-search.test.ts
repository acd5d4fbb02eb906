// Audit search: AuditLog.search (filters, time range, pagination, prompts as stored) and
// GET /api/v1/admin/audit over a real server with the policy screener and a hash-mode log.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditLog } from '../../src/safety/audit/audit-log.ts';
import { defaultPolicy } from '../../src/safety/policy/policy.ts';
import { Screener } from '../../src/safety/screen/screener.ts';
import { stubEmbedder } from '../safety/support/stub-embedder.ts';
import { bearer, postJson, startPolicyHarness, tempDir, type Harness } from './support/harness.ts';

/** GET /api/v1/admin/audit with the given query string. */
async function searchAudit(h: Harness, query: string, key: string) {
  const res = await fetch(`${h.base}/api/v1/admin/audit?${query}`, { headers: bearer(key) });
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- audit rows are checked field by field below
  return { status: res.status, body: (await res.json()) as { entries: Record<string, any>[]; next_before: number | null } };
}

describe('AuditLog.search', () => {
  let log: AuditLog;
  let clock = Date.parse('2026-01-01T00:00:00Z');
  beforeAll(() => {
    log = new AuditLog(join(tempDir('audit-search'), 'audit.db'), { now: () => new Date(clock) });
    // 25 rows, one minute apart: callers alternate, every 5th is a refusal with a block.
    for (let i = 0; i < 25; i++) {
      const refused = i % 5 === 0;
      log.append({
        kind: refused ? 'block' : 'screen',
        caller: i % 2 === 0 ? 'key-even' : 'key-odd',
        role: 'creator',
        prompts: log.prompts(`prompt number ${i}`),
        verdict: refused ? 'refuse' : 'allow',
        categories: refused ? [{ category: 'extremist' }] : [],
        ...(refused ? { blocks: [{ stage: 'prompt', category: 'extremist', reason: `Refused 100%_sure case ${i}` }] } : {}),
        details: { reason: refused ? '' : `allowed as row ${i}` },
      });
      clock += 60_000;
    }
  });
  afterAll(() => log.close());

  it('filters by caller, kind, verdict and category, newest first', () => {
    const even = log.search({ caller: 'key-even' }).rows;
    expect(even.map((r) => r.seq)).toEqual([25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1]);
    expect(log.search({ kind: 'block' }).rows.map((r) => r.seq)).toEqual([21, 16, 11, 6, 1]);
    expect(log.search({ verdict: 'refuse', caller: 'key-odd' }).rows.map((r) => r.seq)).toEqual([16, 6]);
    expect(log.search({ category: 'extremist' }).rows).toHaveLength(5);
    expect(log.search({ category: 'sexual' }).rows).toHaveLength(0);
  });

  it('matches reason text literally and case-insensitively (% and _ are not wildcards)', () => {
    expect(log.search({ text: '100%_SURE case 1' }).rows.map((r) => r.seq)).toEqual([16, 11]);
    expect(log.search({ text: '100x' }).rows).toHaveLength(0);
    expect(log.search({ text: 'allowed as row 3' }).rows.map((r) => r.seq)).toEqual([4]);
  });

  it('limits to a time range: since inclusive, until exclusive', () => {
    const r = log.search({ since: '2026-01-01T00:02:00Z', until: '2026-01-01T00:05:00Z' }).rows;
    expect(r.map((x) => x.seq)).toEqual([5, 4, 3]);
    expect(() => log.search({ since: 'yesterday' })).toThrow(/since 'yesterday' is not a date/);
  });

  it('pages with before/nextBefore without gaps or repeats', () => {
    const seen: number[] = [];
    let before: number | undefined;
    for (let pages = 0; pages < 10; pages++) {
      const page = log.search({ limit: 7, ...(before !== undefined ? { before } : {}) });
      seen.push(...page.rows.map((r) => r.seq));
      if (page.nextBefore === null) break;
      before = page.nextBefore;
    }
    expect(seen).toEqual(Array.from({ length: 25 }, (_, i) => 25 - i));
    expect(() => log.search({ limit: 0 })).toThrow(/limit 0/);
  });
});

describe('GET /api/v1/admin/audit over a real server', () => {
  let h: Harness;
  let log: AuditLog;
  const policy = defaultPolicy();

  beforeAll(async () => {
    const dataDir = tempDir('audit-api');
    log = new AuditLog(join(dataDir, 'audit.db'), { promptStorage: 'hash', salt: 'test-salt' });
    h = await startPolicyHarness({ policy, log, dataDir });
    const refused = await postJson(`${h.base}/api/v1/jobs`, { prompt: 'a child covered in blood and gore', steps: 2, width: 64, height: 64 }, bearer(h.keys.creator));
    expect(refused.status).toBe(403);
    for (const prompt of ['a quiet lake at dawn', 'a zombie with a deep bleeding wound']) {
      const ok = await postJson(`${h.base}/api/v1/jobs`, { prompt, steps: 2, width: 64, height: 64 }, bearer(h.keys.studio));
      expect(ok.status).toBe(202);
    }
  }, 60_000);
  afterAll(async () => {
    await h?.close();
    log?.close();
  });

  const search = (query: string, key = h.keys.admin) => searchAudit(h, query, key);

  it('is for admins only', async () => {
    expect((await search('', h.keys.studio)).status).toBe(403);
    expect((await fetch(`${h.base}/api/v1/admin/audit`)).status).toBe(401);
  });

  it('finds the refusal by caller, verdict, category and reason text, with prompts only as salted hashes', async () => {
    const byCaller = await search(`caller=${encodeURIComponent(h.callers.creator)}&kind=screening`);
    expect(byCaller.status).toBe(200);
    expect(byCaller.body.entries).toHaveLength(1);
    const row = byCaller.body.entries[0]!;
    expect(row).toMatchObject({ kind: 'screen', caller: h.callers.creator, role: 'creator', verdict: 'refuse' });
    expect(row.categories.map((c: { category: string }) => c.category)).toContain('minors_graded');
    expect(row.prompts.storage).toBe('hash');
    expect(row.prompts.prompt).toMatch(/^hmac-sha256:[0-9a-f]{64}$/);
    // The fixed refusal reason names the category; the prompt's own words never appear.
    expect(JSON.stringify(byCaller.body)).not.toMatch(/child covered|covered in blood/);
    expect((await search('verdict=refuse')).body.entries.map((e) => e.caller)).toEqual([h.callers.creator]);
    expect((await search('category=minors_graded')).body.entries).toHaveLength(1);
    expect((await search(`q=${encodeURIComponent('NEVER PRODUCES')}`)).body.entries.map((e) => e.caller)).toEqual([h.callers.creator]);
    expect((await search('verdict=clamp')).body.entries.map((e) => e.caller)).toEqual([]);
  });

  it('pages newest first and honours a time range', async () => {
    const first = await search('kind=screening&limit=2');
    expect(first.body.entries).toHaveLength(2);
    expect(first.body.entries[0]!.seq).toBeGreaterThan(first.body.entries[1]!.seq);
    expect(first.body.next_before).toBe(first.body.entries[1]!.seq);
    const second = await search(`kind=screening&limit=2&before=${first.body.next_before}`);
    expect(second.body.entries.map((e) => e.caller)).toEqual([h.callers.creator]);
    expect(second.body.next_before).toBeNull();
    expect((await search(`since=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`)).body.entries).toEqual([]);
    expect((await search('since=not-a-date')).status).toBe(422);
  });
});

describe('screening sources through the service', () => {
  let h: Harness;
  let log: AuditLog;

  beforeAll(async () => {
    // The semantic layer on, with the stub embedder and one graded concept phrase: the
    // phrase itself is found only by the semantic layer, a wound only by the lexicon.
    const policy = defaultPolicy();
    policy.semantic.enabled = true;
    policy.semantic.thresholds.graphic_injury = 0.99;
    const screener = new Screener(policy, { embedder: stubEmbedder(), conceptPhrases: [{ category: 'graphic_injury', text: 'crimson ruin of a statue', level: 2 }] });
    expect(screener.screen({ prompt: 'crimson ruin of a statue' }, 'studio').categories).toEqual([]);
    const dataDir = tempDir('audit-source');
    log = new AuditLog(join(dataDir, 'audit.db'));
    h = await startPolicyHarness({ policy, log, dataDir, screener });
  }, 60_000);
  afterAll(async () => {
    await h?.close();
    log?.close();
  });

  it('keeps source semantic or lexicon on each category, in the stored row and in the admin search', async () => {
    for (const prompt of ['crimson ruin of a statue', 'a zombie with a deep bleeding wound']) {
      const res = await postJson(`${h.base}/api/v1/jobs`, { prompt, steps: 2, width: 64, height: 64 }, bearer(h.keys.studio));
      expect(res.status, await res.clone().text()).toBe(202);
    }
    // each with its evidence: the semantic hit spans the prompt, the lexicon names the words
    const expected = [
      [{ category: 'graphic_injury', source: 'semantic', rules: ['semantic'], evidence: [{ field: 'prompt', start: 0, end: 24, text: 'crimson ruin of a statue', signal: 'semantic', score: expect.any(Number), concept: 'crimson ruin of a statue' }] }],
      [{ category: 'graphic_injury', source: 'lexicon', rules: ['injury_level'], evidence: expect.arrayContaining([{ field: 'prompt', start: 30, end: 35, text: 'wound', signal: 'injury', term: 'wound' }]) }],
    ];
    const stored = [...log.rows()].filter((r) => r.kind === 'screen');
    expect(stored.map((r) => r.event.categories)).toEqual(expected);
    const found = await searchAudit(h, `kind=screening&caller=${encodeURIComponent(h.callers.studio)}`, h.keys.admin);
    expect(found.status).toBe(200);
    // Newest first.
    expect(found.body.entries.map((e) => e.categories)).toEqual([...expected].reverse());
  });
});
