import Database from 'better-sqlite3';
import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { RedlineError } from '../errors.ts';
import { generateKey, hashPassword, hashSecret, parseKey, secretMatches, verifyPassword } from './keys.ts';

// The service's own state in <data-dir>/service.db: accounts, keys, sessions, jobs and
// their images, and the block log used by the monitoring routes. One SQLite file in WAL
// mode; every write is a single statement or a transaction, so a crash leaves no half job.

export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface JobRow {
  id: string;
  seq: number;
  caller: string;
  role: string;
  mode: 'txt2img' | 'img2img';
  state: JobState;
  attempts: number;
  request_json: string;
  screening_json: string;
  error: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  progress_step: number;
  progress_total: number;
  info_json: string | null;
}

export interface JobImageRow {
  job_id: string;
  idx: number;
  png: Buffer;
  infotext: string;
  seed: number;
  provenance_json: string | null;
}

export interface KeyRow {
  id: string;
  name: string;
  role: string;
  user_id: number | null;
  created_at: number;
  last_used_at: number | null;
  revoked_at: number | null;
}

export interface UserRow {
  id: number;
  username: string;
  role: string;
  disabled: number;
  created_at: number;
}

export interface BlockRow {
  id: number;
  at: number;
  caller: string;
  role: string;
  stage: string;
  categories: string;
  reason: string;
  job_id: string | null;
}

export interface Caller {
  /** Stable identity for logs, limits and audit: 'key:<id>' or 'user:<name>'. */
  id: string;
  role: string;
  via: 'key' | 'session';
  keyId?: string;
  userId?: number;
  csrfToken?: string;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS users (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  username TEXT NOT NULL UNIQUE,
  password_hash TEXT NOT NULL,
  role TEXT NOT NULL,
  disabled INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  role TEXT NOT NULL,
  user_id INTEGER REFERENCES users(id),
  secret_hash TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  last_used_at INTEGER,
  revoked_at INTEGER
);
CREATE TABLE IF NOT EXISTS sessions (
  token_hash TEXT PRIMARY KEY,
  user_id INTEGER NOT NULL REFERENCES users(id),
  csrf_token TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  caller TEXT NOT NULL,
  role TEXT NOT NULL,
  mode TEXT NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  request_json TEXT NOT NULL,
  screening_json TEXT NOT NULL,
  error TEXT,
  created_at INTEGER NOT NULL,
  started_at INTEGER,
  finished_at INTEGER,
  progress_step INTEGER NOT NULL DEFAULT 0,
  progress_total INTEGER NOT NULL DEFAULT 0,
  info_json TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
CREATE TABLE IF NOT EXISTS job_images (
  job_id TEXT NOT NULL REFERENCES jobs(id),
  idx INTEGER NOT NULL,
  png BLOB NOT NULL,
  infotext TEXT NOT NULL,
  seed INTEGER NOT NULL,
  provenance_json TEXT,
  PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS blocks (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  caller TEXT NOT NULL,
  role TEXT NOT NULL,
  stage TEXT NOT NULL,
  categories TEXT NOT NULL,
  reason TEXT NOT NULL,
  job_id TEXT
);
CREATE INDEX IF NOT EXISTS blocks_at ON blocks(at);
`;

const SESSION_TTL_MS = 12 * 3600 * 1000;

export class ServiceStore {
  readonly db: Database.Database;

  constructor(readonly dataDir: string) {
    mkdirSync(dataDir, { recursive: true });
    this.db = new Database(join(dataDir, 'service.db'));
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    this.db.pragma('foreign_keys = ON');
    this.db.exec(SCHEMA);
  }

  close(): void {
    this.db.close();
  }

  // ---- API keys ----

  createKey(role: string, name: string, userId: number | null = null): { key: string; row: KeyRow } {
    const k = generateKey();
    const now = Date.now();
    this.db
      .prepare('INSERT INTO api_keys (id, name, role, user_id, secret_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)')
      .run(k.id, name, role, userId, k.secretHash, now);
    return { key: k.key, row: this.getKey(k.id)! };
  }

  getKey(id: string): KeyRow | undefined {
    return this.db
      .prepare('SELECT id, name, role, user_id, created_at, last_used_at, revoked_at FROM api_keys WHERE id = ?')
      .get(id) as KeyRow | undefined;
  }

  listKeys(): KeyRow[] {
    return this.db
      .prepare('SELECT id, name, role, user_id, created_at, last_used_at, revoked_at FROM api_keys ORDER BY created_at')
      .all() as KeyRow[];
  }

  /** Accepts the key's public id or the whole key. */
  resolveKeyId(idOrKey: string): string {
    const parsed = parseKey(idOrKey);
    const id = parsed.ok ? parsed.id : idOrKey;
    if (!this.getKey(id)) throw new RedlineError('unknown_key', `no API key with id '${id}'.`, 'Run `redline keys list` to see key ids.');
    return id;
  }

  revokeKey(id: string): void {
    const r = this.db.prepare('UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(Date.now(), id);
    if (r.changes === 0) {
      if (!this.getKey(id)) throw new RedlineError('unknown_key', `no API key with id '${id}'.`);
    }
  }

  /** Revokes the old key and issues a new one with the same name, role and owner. */
  rotateKey(id: string): { key: string; row: KeyRow } {
    return this.db.transaction(() => {
      const old = this.getKey(id);
      if (!old) throw new RedlineError('unknown_key', `no API key with id '${id}'.`);
      if (old.revoked_at !== null) throw new RedlineError('key_revoked', `API key '${id}' is revoked; create a new key instead.`);
      this.revokeKey(id);
      return this.createKey(old.role, old.name, old.user_id);
    })();
  }

  /** Returns the caller for a presented key, or a reason it is not accepted. */
  authenticateKey(key: string): { caller: Caller } | { error: string } {
    const parsed = parseKey(key);
    if (!parsed.ok) return { error: parsed.reason };
    const row = this.db
      .prepare('SELECT k.id, k.role, k.secret_hash, k.revoked_at, u.disabled FROM api_keys k LEFT JOIN users u ON u.id = k.user_id WHERE k.id = ?')
      .get(parsed.id) as { id: string; role: string; secret_hash: string; revoked_at: number | null; disabled: number | null } | undefined;
    if (!row || !secretMatches(parsed.secret, row.secret_hash)) return { error: 'unknown API key' };
    if (row.revoked_at !== null) return { error: 'API key revoked' };
    if (row.disabled) return { error: 'the account owning this key is disabled' };
    this.db.prepare('UPDATE api_keys SET last_used_at = ? WHERE id = ?').run(Date.now(), row.id);
    return { caller: { id: `key:${row.id}`, role: row.role, via: 'key', keyId: row.id } };
  }

  // ---- users and sessions ----

  async createUser(username: string, password: string, role: string): Promise<UserRow> {
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(username)) {
      throw new RedlineError('bad_username', `user name '${username}' is not allowed.`, 'Use 1-64 letters, digits, _ . or -.');
    }
    if (password.length < 10) throw new RedlineError('weak_password', 'passwords need at least 10 characters.');
    if (this.getUser(username)) throw new RedlineError('user_exists', `user '${username}' already exists.`);
    const hash = await hashPassword(password);
    this.db
      .prepare('INSERT INTO users (username, password_hash, role, created_at) VALUES (?, ?, ?, ?)')
      .run(username, hash, role, Date.now());
    return this.getUser(username)!;
  }

  getUser(username: string): UserRow | undefined {
    return this.db
      .prepare('SELECT id, username, role, disabled, created_at FROM users WHERE username = ?')
      .get(username) as UserRow | undefined;
  }

  listUsers(): UserRow[] {
    return this.db.prepare('SELECT id, username, role, disabled, created_at FROM users ORDER BY id').all() as UserRow[];
  }

  updateUser(username: string, change: { role?: string; disabled?: boolean; password?: string }): Promise<UserRow> {
    return (async () => {
      const user = this.getUser(username);
      if (!user) throw new RedlineError('unknown_user', `no user '${username}'.`);
      if (change.password !== undefined) {
        if (change.password.length < 10) throw new RedlineError('weak_password', 'passwords need at least 10 characters.');
        this.db.prepare('UPDATE users SET password_hash = ? WHERE id = ?').run(await hashPassword(change.password), user.id);
        this.db.prepare('DELETE FROM sessions WHERE user_id = ?').run(user.id);
      }
      if (change.role !== undefined) this.db.prepare('UPDATE users SET role = ? WHERE id = ?').run(change.role, user.id);
      if (change.disabled !== undefined) {
        this.db.prepare('UPDATE users SET disabled = ? WHERE id = ?').run(change.disabled ? 1 : 0, user.id);
        if (change.disabled) this.db.prepare('DELETE FROM sessions WHERE user_id = ?').run(user.id);
      }
      return this.getUser(username)!;
    })();
  }

  async login(username: string, password: string): Promise<{ token: string; csrfToken: string; user: UserRow } | null> {
    const row = this.db.prepare('SELECT * FROM users WHERE username = ?').get(username) as (UserRow & { password_hash: string }) | undefined;
    // Verify against a dummy hash when the user is unknown so timing does not reveal names.
    const ok = await verifyPassword(password, row?.password_hash ?? DUMMY_HASH);
    if (!row || !ok || row.disabled) return null;
    const token = randomUUID() + randomUUID();
    const csrfToken = randomUUID();
    const now = Date.now();
    this.db
      .prepare('INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at) VALUES (?, ?, ?, ?, ?)')
      .run(hashSecret(token), row.id, csrfToken, now, now + SESSION_TTL_MS);
    return { token, csrfToken, user: this.getUser(username)! };
  }

  sessionCaller(token: string): Caller | null {
    const row = this.db
      .prepare('SELECT s.user_id, s.csrf_token, s.expires_at, u.username, u.role, u.disabled FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?')
      .get(hashSecret(token)) as { user_id: number; csrf_token: string; expires_at: number; username: string; role: string; disabled: number } | undefined;
    if (!row || row.expires_at < Date.now() || row.disabled) return null;
    return { id: `user:${row.username}`, role: row.role, via: 'session', userId: row.user_id, csrfToken: row.csrf_token };
  }

  logout(token: string): void {
    this.db.prepare('DELETE FROM sessions WHERE token_hash = ?').run(hashSecret(token));
  }

  // ---- jobs ----

  /** `id`: the submission's request id, already in its audit rows (default: a fresh UUID). */
  insertJob(job: { id?: string; caller: string; role: string; mode: 'txt2img' | 'img2img'; request: unknown; screening: unknown }): JobRow {
    const id = job.id ?? randomUUID();
    this.db
      .prepare(`INSERT INTO jobs (id, caller, role, mode, state, request_json, screening_json, created_at) VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)`)
      .run(id, job.caller, job.role, job.mode, JSON.stringify(job.request), JSON.stringify(job.screening), Date.now());
    return this.getJob(id)!;
  }

  getJob(id: string): JobRow | undefined {
    return this.db.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow | undefined;
  }

  listJobs(filter: { caller?: string; state?: JobState; limit: number }): JobRow[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.caller) { where.push('caller = ?'); args.push(filter.caller); }
    if (filter.state) { where.push('state = ?'); args.push(filter.state); }
    const sql = `SELECT * FROM jobs ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY seq DESC LIMIT ?`;
    return this.db.prepare(sql).all(...args, filter.limit) as JobRow[];
  }

  /** Atomically takes the oldest queued job: no two workers can get the same one. */
  claimNextJob(): JobRow | undefined {
    return this.db
      .prepare(`UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?, progress_step = 0
                WHERE seq = (SELECT seq FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1) AND state = 'queued'
                RETURNING *`)
      .get(Date.now()) as JobRow | undefined;
  }

  /** Marks a job running when an external queue (BullMQ) reports it started. */
  markRunningIfQueued(id: string): void {
    this.db
      .prepare(`UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ? WHERE id = ? AND state = 'queued'`)
      .run(Date.now(), id);
  }

  /**
   * Recovery after a crash: a job left 'running' was cut off. It goes back to the queue
   * once; a job cut off on its second attempt fails, so a job that crashes the process
   * cannot crash it forever.
   */
  recoverInterrupted(maxAttempts: number): { requeued: string[]; failed: string[] } {
    return this.db.transaction(() => {
      const rows = this.db.prepare(`SELECT id, attempts FROM jobs WHERE state = 'running'`).all() as { id: string; attempts: number }[];
      const requeued: string[] = [];
      const failed: string[] = [];
      for (const r of rows) {
        if (r.attempts < maxAttempts) {
          this.db.prepare(`UPDATE jobs SET state = 'queued', progress_step = 0 WHERE id = ?`).run(r.id);
          requeued.push(r.id);
        } else {
          this.db
            .prepare(`UPDATE jobs SET state = 'failed', error = ?, finished_at = ? WHERE id = ?`)
            .run(`interrupted ${r.attempts} times (server stopped while it ran); not retried again`, Date.now(), r.id);
          failed.push(r.id);
        }
      }
      return { requeued, failed };
    })();
  }

  setProgress(id: string, step: number, total: number): void {
    this.db.prepare('UPDATE jobs SET progress_step = ?, progress_total = ? WHERE id = ?').run(step, total, id);
  }

  /** Stores the images and marks the job done in one transaction; false if it had already finished. */
  completeJob(id: string, images: Omit<JobImageRow, 'job_id'>[], info: unknown): boolean {
    return this.db.transaction(() => {
      const r = this.db
        .prepare(`UPDATE jobs SET state = 'succeeded', finished_at = ?, info_json = ? WHERE id = ? AND state IN ('queued', 'running')`)
        .run(Date.now(), JSON.stringify(info), id);
      if (r.changes === 0) return false;
      const ins = this.db.prepare('INSERT INTO job_images (job_id, idx, png, infotext, seed, provenance_json) VALUES (?, ?, ?, ?, ?, ?)');
      for (const im of images) ins.run(id, im.idx, im.png, im.infotext, im.seed, im.provenance_json);
      return true;
    })();
  }

  failJob(id: string, error: string, info: unknown = null): void {
    this.db
      .prepare(`UPDATE jobs SET state = 'failed', error = ?, finished_at = ?, info_json = COALESCE(?, info_json) WHERE id = ? AND state IN ('queued', 'running')`)
      .run(error, Date.now(), info === null ? null : JSON.stringify(info), id);
  }

  /** Cancels a queued job at once; a running one is cancelled by its worker. */
  cancelQueued(id: string): boolean {
    const r = this.db
      .prepare(`UPDATE jobs SET state = 'cancelled', finished_at = ?, error = 'cancelled by the caller' WHERE id = ? AND state = 'queued'`)
      .run(Date.now(), id);
    return r.changes > 0;
  }

  markCancelled(id: string): void {
    this.db
      .prepare(`UPDATE jobs SET state = 'cancelled', finished_at = ?, error = 'cancelled by the caller' WHERE id = ? AND state IN ('queued', 'running')`)
      .run(Date.now(), id);
  }

  jobImages(id: string): JobImageRow[] {
    return this.db.prepare('SELECT * FROM job_images WHERE job_id = ? ORDER BY idx').all(id) as JobImageRow[];
  }

  countJobImages(id: string): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM job_images WHERE job_id = ?').get(id) as { n: number }).n;
  }

  jobImage(id: string, idx: number): JobImageRow | undefined {
    return this.db.prepare('SELECT * FROM job_images WHERE job_id = ? AND idx = ?').get(id, idx) as JobImageRow | undefined;
  }

  countJobsByState(): Record<JobState, number> {
    const out: Record<JobState, number> = { queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 };
    for (const r of this.db.prepare('SELECT state, COUNT(*) AS n FROM jobs GROUP BY state').all() as { state: JobState; n: number }[]) {
      out[r.state] = r.n;
    }
    return out;
  }

  // ---- blocks (monitoring) ----

  recordBlock(b: { caller: string; role: string; stage: string; categories: string[]; reason: string; jobId?: string | null }): void {
    this.db
      .prepare('INSERT INTO blocks (at, caller, role, stage, categories, reason, job_id) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(Date.now(), b.caller, b.role, b.stage, JSON.stringify(b.categories), b.reason, b.jobId ?? null);
  }

  listBlocks(limit: number, since = 0): BlockRow[] {
    return this.db.prepare('SELECT * FROM blocks WHERE at >= ? ORDER BY id DESC LIMIT ?').all(since, limit) as BlockRow[];
  }

  topBlockedCallers(limit: number, since = 0): { caller: string; role: string; blocks: number; last_at: number }[] {
    return this.db
      .prepare('SELECT caller, MAX(role) AS role, COUNT(*) AS blocks, MAX(at) AS last_at FROM blocks WHERE at >= ? GROUP BY caller ORDER BY blocks DESC, last_at DESC LIMIT ?')
      .all(since, limit) as { caller: string; role: string; blocks: number; last_at: number }[];
  }
}

// scrypt hash of a random password nobody knows; used to equalise login timing.
const DUMMY_HASH = 'scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=';
