// Append-only, hash-chained audit log in SQLite (better-sqlite3).
//
// Each row stores its event as canonical JSON and
//   hash = sha256(prev_hash + "\n" + canonical JSON of {seq, ts, kind, event})
// where prev_hash is the previous row's hash (64 zeros for the first row). Triggers refuse
// UPDATE and DELETE. The chain head (last seq and hash) is kept in a `head` table written in
// the same transaction, so truncation is caught too; an operator who wants protection
// against someone rewriting the whole file keeps `verify`'s head hash somewhere else and
// passes it back with `expectHead`.
import { createHash, createHmac } from 'node:crypto';
import Database from 'better-sqlite3';
import { RedlineError } from '../../errors.ts';
import type { Policy } from '../policy/policy.ts';

export const GENESIS_HASH = '0'.repeat(64);

/** What one audit row records. Everything optional except kind, caller and role. */
export interface AuditEvent {
  kind: 'screen' | 'generate' | 'block' | 'output_check' | 'admin' | (string & {});
  caller: string;
  role: string;
  /**
   * The request this row belongs to: the job id once the request became a job; for a request
   * refused before that, the id the refusal response gave the caller (X-Request-Id header,
   * `request_id` in the body). Screening, generation, block and consent rows of one request
   * share it. Rows written before it was recorded have none (generation and block rows of
   * that time keep the job id in `details.jobId`, which `AuditQuery.requestId` also matches).
   */
  requestId?: string;
  /** Prompts as given, or as salted hashes; see `AuditLog.prompts`. */
  prompts?: AuditPrompts;
  verdict?: 'allow' | 'clamp' | 'refuse';
  /** `rules`: the screening rules that fired (src/safety/screen/rules.ts ids, or 'semantic'). */
  categories?: { category: string; hardBlocked?: boolean; source?: string; rules?: string[]; evidence?: AuditEvidence[]; score?: number }[];
  requestedIntensity?: number;
  effectiveIntensity?: number;
  model?: { name?: string; sha256?: string; shortHash?: string };
  adapters?: { name: string; sha256?: string; shortHash?: string; strength?: number }[];
  outputs?: { sha256: string; width?: number; height?: number }[];
  blocks?: { stage: string; category: string; reason: string; scores?: Record<string, number> }[];
  /** Anything else a caller needs (seed, sampler, consent reference...). JSON values only. */
  details?: Record<string, unknown>;
}

/**
 * Why the screener put a request in a category: one matched span. Offsets are UTF-16 code
 * units into the field as screened and stored in the row's `prompts` (for the service, the
 * submitted prompt with its <lora:...> tags taken out).
 */
export interface AuditEvidence {
  /** 'prompt', 'negative_prompt' or 'lora' (then `index` is the LoRA's position). */
  field: string;
  index?: number;
  start: number;
  end: number;
  /** The lexicon tag (or age / negative-prompt signal, or 'semantic') the span gave. */
  signal: string;
  /** The normalised lexicon term that matched. Present only when prompts are stored as text. */
  term?: string;
  /** The span's original text. Present only when prompts are stored as text. */
  text?: string;
  /** Semantic layer: cosine similarity, and the concept phrase (project data, not the prompt). */
  score?: number;
  concept?: string;
}

export interface AuditPrompts {
  storage: 'text' | 'hash';
  prompt?: string;
  negativePrompt?: string;
  loras?: string[];
}

export interface AuditRow {
  seq: number;
  ts: string;
  kind: string;
  event: AuditEvent;
  prevHash: string;
  hash: string;
}

export interface VerifyProblem {
  seq: number;
  problem: 'hash_mismatch' | 'broken_link' | 'sequence_gap' | 'bad_json' | 'truncated' | 'head_mismatch' | 'missing_head';
  message: string;
}

export interface VerifyResult {
  ok: boolean;
  rows: number;
  headSeq: number;
  headHash: string;
  problems: VerifyProblem[];
}

/** JSON with object keys sorted at every level and no whitespace (stable input for hashing). */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') {
    if (typeof value === 'number' && !Number.isFinite(value)) throw new Error(`canonicalJson: non-finite number ${value}`);
    if (value === undefined) return 'null';
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v === undefined ? null : v)).join(',')}]`;
  const keys = Object.keys(value).filter((k) => (value as Record<string, unknown>)[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`).join(',')}}`;
}

export function rowHash(prevHash: string, seq: number, ts: string, kind: string, eventJson: string): string {
  const body = `{"event":${eventJson},"kind":${JSON.stringify(kind)},"seq":${seq},"ts":${JSON.stringify(ts)}}`;
  return createHash('sha256').update(prevHash).update('\n').update(body).digest('hex');
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS audit (
  seq INTEGER PRIMARY KEY,
  ts TEXT NOT NULL,
  kind TEXT NOT NULL,
  event TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS head (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  seq INTEGER NOT NULL,
  hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit log is append-only: DELETE refused'); END;
CREATE TRIGGER IF NOT EXISTS head_no_delete BEFORE DELETE ON head
BEGIN SELECT RAISE(ABORT, 'audit head cannot be deleted'); END;
CREATE TRIGGER IF NOT EXISTS head_forward_only BEFORE UPDATE ON head
WHEN NEW.seq <> OLD.seq + 1 OR NEW.hash <> (SELECT hash FROM audit WHERE seq = NEW.seq)
BEGIN SELECT RAISE(ABORT, 'audit head only moves forward to the newest row'); END;
`;

/** Filters for `AuditLog.search`; every given filter must match. */
export interface AuditQuery {
  caller?: string;
  kind?: string;
  verdict?: 'allow' | 'clamp' | 'refuse';
  /** A category named in the row's categories or blocks. */
  category?: string;
  /** ISO time, inclusive. */
  since?: string;
  /** ISO time, exclusive. */
  until?: string;
  /** Case-insensitive substring of a reason (a block's reason or details.reason). */
  text?: string;
  /** The job or request id (`requestId`, or `details.jobId` of rows older than that field). */
  requestId?: string;
  /** SHA-256 (hex) of a returned image, as in a generation row's `outputs`. */
  output?: string;
  /** Page size, 1..5000 (default 100). */
  limit?: number;
  /** Return rows older than this seq (the previous page's `nextBefore`). */
  before?: number;
}

export interface AuditPage {
  /** Newest first. Prompts appear as stored: text, or salted hashes under a 'hash' policy. */
  rows: AuditRow[];
  /** Pass as `before` for the next (older) page; null when this page is the last. */
  nextBefore: number | null;
}

export interface AuditLogOptions {
  /** 'text' or 'hash' (default from the policy, else 'text'). */
  promptStorage?: 'text' | 'hash';
  /** Secret salt for hashed prompts (required with 'hash'). */
  salt?: string;
  /** Clock, for tests. */
  now?: () => Date;
}

export class AuditLog {
  private readonly db: Database.Database;
  private readonly promptStorage: 'text' | 'hash';
  private readonly salt: string | undefined;
  private readonly now: () => Date;
  private readonly insert: Database.Statement;
  private readonly lastRow: Database.Statement;
  private readonly setHead: Database.Statement;
  private readonly initHead: Database.Statement;

  constructor(readonly path: string, options: AuditLogOptions = {}) {
    this.promptStorage = options.promptStorage ?? 'text';
    this.salt = options.salt;
    if (this.promptStorage === 'hash' && !this.salt) {
      throw new RedlineError('audit_salt_missing', 'The policy stores prompts as salted hashes but no salt was given.',
        'Set the environment variable named by policy.audit.saltEnv (default REDLINE_AUDIT_SALT) to a secret string.');
    }
    this.now = options.now ?? (() => new Date());
    try {
      this.db = new Database(path);
    } catch (err) {
      throw new RedlineError('audit_open_failed', `Cannot open audit log ${path}: ${(err as Error).message}.`);
    }
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.exec(SCHEMA);
    this.insert = this.db.prepare('INSERT INTO audit (seq, ts, kind, event, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?)');
    this.lastRow = this.db.prepare('SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1');
    this.setHead = this.db.prepare('UPDATE head SET seq = ?, hash = ? WHERE id = 1');
    this.initHead = this.db.prepare('INSERT INTO head (id, seq, hash) VALUES (1, ?, ?)');
  }

  /** Opens the log with the policy's prompt-storage mode, reading the salt from the environment. */
  static forPolicy(path: string, policy: Policy, env: NodeJS.ProcessEnv = process.env): AuditLog {
    return new AuditLog(path, { promptStorage: policy.audit.promptStorage, salt: env[policy.audit.saltEnv] });
  }

  get storage(): 'text' | 'hash' {
    return this.promptStorage;
  }

  /** The prompts as this log stores them (text, or HMAC-SHA256 with the secret salt). */
  prompts(prompt: string, negativePrompt?: string, loras?: string[]): AuditPrompts {
    const keep = (s: string) => (this.promptStorage === 'text' ? s : `hmac-sha256:${createHmac('sha256', this.salt!).update(s).digest('hex')}`);
    const out: AuditPrompts = { storage: this.promptStorage, prompt: keep(prompt) };
    if (negativePrompt !== undefined) out.negativePrompt = keep(negativePrompt);
    if (loras !== undefined) out.loras = loras.map(keep);
    return out;
  }

  /** Evidence as stored: without the matched text or term when prompts are hashed (both
   * would give away the prompt's words). */
  evidence(items: readonly AuditEvidence[]): AuditEvidence[] {
    return items.map((e) => (this.promptStorage === 'text' ? { ...e } : { ...e, text: undefined, term: undefined }));
  }

  /** Appends one event; returns the stored row. */
  append(event: AuditEvent): AuditRow {
    if (!event.kind || !event.caller || !event.role) {
      throw new Error('audit event needs kind, caller and role');
    }
    const eventJson = canonicalJson(event);
    const tx = this.db.transaction((): AuditRow => {
      const last = this.lastRow.get() as { seq: number; hash: string } | undefined;
      const seq = (last?.seq ?? 0) + 1;
      const prevHash = last?.hash ?? GENESIS_HASH;
      const ts = this.now().toISOString();
      const hash = rowHash(prevHash, seq, ts, event.kind, eventJson);
      this.insert.run(seq, ts, event.kind, eventJson, prevHash, hash);
      if (seq === 1) this.initHead.run(seq, hash);
      else this.setHead.run(seq, hash);
      return { seq, ts, kind: event.kind, event: JSON.parse(eventJson) as AuditEvent, prevHash, hash };
    });
    return tx.immediate();
  }

  /** Every row, oldest first, read as it goes; with `query`, only the rows its filters match (`limit` does not apply). */
  *rows(query: Omit<AuditQuery, 'limit'> = {}): Generator<AuditRow> {
    const { sql, args } = this.filter(query);
    const it = this.db.prepare(`SELECT seq, ts, kind, event, prev_hash, hash FROM audit ${sql} ORDER BY seq`).iterate(...args) as IterableIterator<{
      seq: number; ts: string; kind: string; event: string; prev_hash: string; hash: string;
    }>;
    for (const r of it) yield { seq: r.seq, ts: r.ts, kind: r.kind, event: JSON.parse(r.event) as AuditEvent, prevHash: r.prev_hash, hash: r.hash };
  }

  /**
   * Recomputes the chain. Finds edited rows (hash mismatch), deleted or reordered rows
   * (sequence gaps, broken links), and truncation (the head table, or `expectHead` from an
   * earlier verify kept elsewhere, names a row that is gone).
   */
  verify(expectHead?: { seq: number; hash: string }): VerifyResult {
    const problems: VerifyProblem[] = [];
    let prevHash = GENESIS_HASH;
    let expectedSeq = 1;
    let rows = 0;
    let headSeq = 0;
    let headHash = GENESIS_HASH;
    const it = this.db.prepare('SELECT seq, ts, kind, event, prev_hash, hash FROM audit ORDER BY rowid').iterate() as IterableIterator<{
      seq: number; ts: string; kind: string; event: string; prev_hash: string; hash: string;
    }>;
    for (const r of it) {
      rows++;
      if (r.seq !== expectedSeq) {
        problems.push(r.seq > expectedSeq
          ? { seq: expectedSeq, problem: 'sequence_gap', message: `row ${expectedSeq}${r.seq - expectedSeq > 1 ? `..${r.seq - 1}` : ''} missing (deleted), next row is ${r.seq}` }
          : { seq: r.seq, problem: 'sequence_gap', message: `row ${r.seq} out of order (expected ${expectedSeq}): rows reordered` });
      }
      if (r.prev_hash !== prevHash) {
        problems.push({ seq: r.seq, problem: 'broken_link', message: `row ${r.seq} does not link to the row before it (a row was deleted, inserted or reordered)` });
      }
      let eventJson = r.event;
      try {
        eventJson = canonicalJson(JSON.parse(r.event));
      } catch {
        problems.push({ seq: r.seq, problem: 'bad_json', message: `row ${r.seq} holds invalid JSON (edited)` });
      }
      const want = rowHash(r.prev_hash, r.seq, r.ts, r.kind, eventJson);
      if (want !== r.hash || eventJson !== r.event) {
        problems.push({ seq: r.seq, problem: 'hash_mismatch', message: `row ${r.seq} was edited: its content does not match its hash` });
      }
      prevHash = r.hash;
      headSeq = r.seq;
      headHash = r.hash;
      expectedSeq = r.seq + 1;
    }
    const head = this.db.prepare('SELECT seq, hash FROM head WHERE id = 1').get() as { seq: number; hash: string } | undefined;
    if (head) {
      if (head.seq > headSeq) {
        problems.push({ seq: headSeq + 1, problem: 'truncated', message: `rows ${headSeq + 1}..${head.seq} missing at the end (log truncated)` });
      } else if (head.seq !== headSeq || head.hash !== headHash) {
        problems.push({ seq: head.seq, problem: 'head_mismatch', message: `recorded head (row ${head.seq}) does not match the last row ${headSeq}` });
      }
    } else if (rows > 0) {
      problems.push({ seq: 1, problem: 'missing_head', message: 'the chain head record is missing (edited)' });
    }
    if (expectHead) {
      if (expectHead.seq > headSeq) {
        problems.push({ seq: headSeq + 1, problem: 'truncated', message: `expected at least ${expectHead.seq} rows, found ${headSeq} (log truncated)` });
      } else {
        const at = this.db.prepare('SELECT hash FROM audit WHERE seq = ?').get(expectHead.seq) as { hash: string } | undefined;
        if (!at || at.hash !== expectHead.hash) {
          problems.push({ seq: expectHead.seq, problem: 'head_mismatch', message: `row ${expectHead.seq} does not carry the expected hash (log rewritten)` });
        }
      }
    }
    return { ok: problems.length === 0, rows, headSeq, headHash, problems };
  }

  /** Searches the log, newest first, one page at a time (see AuditQuery). */
  search(query: AuditQuery = {}): AuditPage {
    const limit = query.limit ?? 100;
    if (!Number.isInteger(limit) || limit < 1 || limit > 5000) {
      throw new RedlineError('bad_audit_query', `audit search limit ${limit} is not a whole number in 1..5000.`);
    }
    const { sql: filter, args } = this.filter(query);
    const sql = `SELECT seq, ts, kind, event, prev_hash, hash FROM audit ${filter} ORDER BY seq DESC LIMIT ?`;
    const found = this.db.prepare(sql).all(...args, limit + 1) as { seq: number; ts: string; kind: string; event: string; prev_hash: string; hash: string }[];
    const page = found.slice(0, limit);
    return {
      rows: page.map((r) => ({ seq: r.seq, ts: r.ts, kind: r.kind, event: JSON.parse(r.event) as AuditEvent, prevHash: r.prev_hash, hash: r.hash })),
      nextBefore: found.length > limit ? page[page.length - 1]!.seq : null,
    };
  }

  /** The WHERE clause (empty when nothing filters) and its arguments for a query's filters. */
  private filter(query: Omit<AuditQuery, 'limit'>): { sql: string; args: (string | number)[] } {
    const where: string[] = [];
    const args: (string | number)[] = [];
    const time = (v: string, name: string): string => {
      const ms = Date.parse(v);
      if (Number.isNaN(ms)) throw new RedlineError('bad_audit_query', `audit search ${name} '${v}' is not a date/time.`, 'Use ISO 8601, e.g. 2026-11-25T13:00:00Z.');
      return new Date(ms).toISOString();
    };
    if (query.before !== undefined) { where.push('seq < ?'); args.push(query.before); }
    if (query.kind) { where.push('kind = ?'); args.push(query.kind); }
    if (query.since) { where.push('ts >= ?'); args.push(time(query.since, 'since')); }
    if (query.until) { where.push('ts < ?'); args.push(time(query.until, 'until')); }
    if (query.caller) { where.push("json_extract(event, '$.caller') = ?"); args.push(query.caller); }
    if (query.verdict) { where.push("json_extract(event, '$.verdict') = ?"); args.push(query.verdict); }
    if (query.category) {
      where.push(`(EXISTS (SELECT 1 FROM json_each(event, '$.categories') c WHERE json_extract(c.value, '$.category') = ?)
        OR EXISTS (SELECT 1 FROM json_each(event, '$.blocks') b WHERE json_extract(b.value, '$.category') = ?))`);
      args.push(query.category, query.category);
    }
    if (query.requestId) {
      where.push("(json_extract(event, '$.requestId') = ? OR json_extract(event, '$.details.jobId') = ?)");
      args.push(query.requestId, query.requestId);
    }
    if (query.output) {
      if (!/^[0-9a-f]{64}$/i.test(query.output)) {
        throw new RedlineError('bad_audit_query', `audit search output '${query.output}' is not a SHA-256 hex digest.`, 'Give the 64 hex digits of the image file\'s SHA-256 (e.g. from `sha256sum`).');
      }
      where.push("EXISTS (SELECT 1 FROM json_each(event, '$.outputs') o WHERE json_extract(o.value, '$.sha256') = ?)");
      args.push(query.output.toLowerCase());
    }
    if (query.text) {
      // LIKE with escaped wildcards: the operator's text is matched literally.
      const pattern = `%${query.text.toLowerCase().replace(/[\\%_]/g, (ch) => `\\${ch}`)}%`;
      where.push(`(lower(coalesce(json_extract(event, '$.details.reason'), '')) LIKE ? ESCAPE '\\'
        OR EXISTS (SELECT 1 FROM json_each(event, '$.blocks') b WHERE lower(json_extract(b.value, '$.reason')) LIKE ? ESCAPE '\\'))`);
      args.push(pattern, pattern);
    }
    return { sql: where.length ? `WHERE ${where.join(' AND ')}` : '', args };
  }

  close(): void {
    this.db.close();
  }
}
