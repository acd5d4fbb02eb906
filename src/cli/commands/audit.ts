import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import { RedlineError } from '../../errors.ts';
import { AuditLog, canonicalJson, type AuditQuery, type AuditRow } from '../../safety/audit/audit-log.ts';

export const summary = 'verify or export the hash-chained audit log';

const HELP = `Usage:
  redline audit verify [--db FILE] [--expect-head SEQ:HASH]
  redline audit export --out FILE.jsonl [--db FILE] [FILTERS]
  redline audit search [--db FILE] [FILTERS] [--limit N]

verify   recomputes the hash chain; exits 1 and names every edited, deleted, reordered or
         truncated row. Prints the head (SEQ:HASH): keep it elsewhere and pass it back with
         --expect-head to detect a rewrite of the whole file.
export   writes one JSON object per row (seq, ts, kind, event, prev_hash, hash). Screening
         events carry each category's evidence (field, start/end offsets, lexicon signal,
         matched term and text; no term or text when prompts are stored as hashes); see
         docs/policy.md, "Audit log". With filters, only the matching rows (oldest first).
search   prints the matching rows, newest first, one JSON object per line (as export).

Filters (all given must match):
  --request ID    a job id, or the request_id a refused request's response gave
                  (X-Request-Id): the request's screening, generation, block and consent rows
  --image FILE    an image the service returned: the generation row holding its SHA-256
  --caller ID --kind KIND --verdict allow|clamp|refuse --since ISO --until ISO

--db FILE  the audit database (default: $REDLINE_AUDIT_DB, else ./redline-audit.sqlite)
--limit N  search: at most N rows (default 100)`;

function dbPath(given: string | undefined): string {
  const path = given ?? process.env.REDLINE_AUDIT_DB ?? 'redline-audit.sqlite';
  if (!existsSync(path)) {
    throw new RedlineError('audit_missing', `Audit log ${path} does not exist.`, 'Pass --db FILE or set REDLINE_AUDIT_DB.');
  }
  return path;
}

/** The search filters given on the command line (an empty value counts as not given). */
function filters(o: { request?: string; image?: string; caller?: string; kind?: string; verdict?: string; since?: string; until?: string }): AuditQuery {
  const q: AuditQuery = {};
  if (o.request) q.requestId = o.request;
  if (o.image) {
    if (!existsSync(o.image)) throw new RedlineError('image_missing', `Image ${o.image} does not exist.`, 'Pass the image file as the service returned it (unchanged bytes).');
    q.output = createHash('sha256').update(readFileSync(o.image)).digest('hex');
  }
  if (o.caller) q.caller = o.caller;
  if (o.kind) q.kind = o.kind;
  if (o.verdict) {
    const v = o.verdict;
    if (v !== 'allow' && v !== 'clamp' && v !== 'refuse') throw new RedlineError('bad_args', `--verdict '${v}' is not allow, clamp or refuse.`);
    q.verdict = v;
  }
  if (o.since) q.since = o.since;
  if (o.until) q.until = o.until;
  return q;
}

function rowLine(row: AuditRow): string {
  return canonicalJson({ seq: row.seq, ts: row.ts, kind: row.kind, event: row.event, prev_hash: row.prevHash, hash: row.hash });
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      db: { type: 'string' },
      out: { type: 'string' },
      'expect-head': { type: 'string' },
      request: { type: 'string' },
      image: { type: 'string' },
      caller: { type: 'string' },
      kind: { type: 'string' },
      verdict: { type: 'string' },
      since: { type: 'string' },
      until: { type: 'string' },
      limit: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const [sub, ...rest] = positionals;
  if (rest.length) throw new RedlineError('bad_args', `Unexpected argument '${rest[0]}'.`, 'See `redline audit --help`.');
  if (sub === 'verify') {
    let expect: { seq: number; hash: string } | undefined;
    if (values['expect-head']) {
      const m = /^(\d+):([0-9a-f]{64})$/.exec(values['expect-head']);
      if (!m) throw new RedlineError('bad_args', '--expect-head takes SEQ:HASH as printed by an earlier verify.');
      expect = { seq: Number(m[1]), hash: m[2]! };
    }
    const log = new AuditLog(dbPath(values.db));
    try {
      const r = log.verify(expect);
      for (const p of r.problems) console.log(`row ${p.seq}: ${p.problem}: ${p.message}`);
      console.log(`${r.ok ? 'OK' : 'TAMPERED'}: ${r.rows} rows, head ${r.headSeq}:${r.headHash}`);
      return r.ok ? 0 : 1;
    } finally {
      log.close();
    }
  }
  if (sub === 'export') {
    if (!values.out) throw new RedlineError('bad_args', 'audit export needs --out FILE.jsonl.');
    if (existsSync(values.out)) {
      throw new RedlineError('output_exists', `${values.out} already exists.`, 'Choose another --out file or remove it first.');
    }
    const query = filters(values);
    const log = new AuditLog(dbPath(values.db));
    const out = createWriteStream(values.out, { flags: 'wx' });
    let n = 0;
    try {
      for (const row of log.rows(query)) {
        if (!out.write(`${rowLine(row)}\n`)) await once(out, 'drain');
        n++;
      }
    } finally {
      log.close();
      out.end();
      await once(out, 'close');
    }
    console.error(`exported ${n} rows to ${values.out}`);
    return 0;
  }
  if (sub === 'search') {
    const limit = values.limit === undefined ? 100 : Number(values.limit);
    const log = new AuditLog(dbPath(values.db));
    try {
      const page = log.search({ ...filters(values), limit });
      for (const row of page.rows) console.log(rowLine(row));
      console.error(`${page.rows.length} rows${page.nextBefore !== null ? ` (more: raise --limit)` : ''}`);
    } finally {
      log.close();
    }
    return 0;
  }
  throw new RedlineError('bad_args', sub ? `Unknown audit subcommand '${sub}'.` : 'Missing audit subcommand.', 'Use `redline audit verify`, `redline audit search` or `redline audit export --out FILE.jsonl`.');
}
