import { useCallback, useEffect, useState, type FormEvent } from 'react';
import { api, ApiError, errorText, type BlockRow, type KeyRow, type Me, type PolicyView as PolicyData, type TopCaller, type UserRow } from './api.ts';

export type AdminPage = 'admin-users' | 'admin-policy' | 'admin-audit' | 'admin-monitoring';

// Role names the built-in table ships; the server is the judge (an unknown role gets a
// 422 naming the roles it has), these only fill the pickers.
const KNOWN_ROLES = ['viewer', 'creator', 'studio', 'admin'];

export function Admin({ page, me }: { page: AdminPage; me: Me }) {
  switch (page) {
    case 'admin-users': return <UsersAndKeys />;
    case 'admin-policy': return <PolicyView me={me} />;
    case 'admin-audit': return <AuditSearch />;
    case 'admin-monitoring': return <Monitoring />;
  }
}

function useLoad<T>(load: () => Promise<T>): { data: T | null; error: string | null; reload: () => void } {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [n, setN] = useState(0);
  useEffect(() => {
    let cancelled = false;
    load().then((d) => { if (!cancelled) { setData(d); setError(null); } }, (err: unknown) => { if (!cancelled) setError(errorText(err)); });
    return () => { cancelled = true; };
  }, [n]);
  return { data, error, reload: useCallback(() => setN((x) => x + 1), []) };
}

const when = (iso: string | null) => (iso ? new Date(iso).toLocaleString() : '—');

function UsersAndKeys() {
  const users = useLoad(api.users);
  const keys = useLoad(api.keys);
  const [message, setMessage] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [newKey, setNewKey] = useState<{ key: string; name: string; role: string } | null>(null);
  const [u, setU] = useState({ username: '', password: '', role: 'creator' });
  const [k, setK] = useState({ name: '', role: 'creator', username: '' });

  const act = async (what: () => Promise<unknown>, done: string) => {
    setError(null);
    setMessage(null);
    try {
      await what();
      setMessage(done);
      users.reload();
      keys.reload();
    } catch (err) {
      setError(errorText(err));
    }
  };

  const createUser = (e: FormEvent) => {
    e.preventDefault();
    void act(() => api.createUser(u.username, u.password, u.role), `User ${u.username} created.`).then(() => setU({ ...u, username: '', password: '' }));
  };
  const createKey = (e: FormEvent) => {
    e.preventDefault();
    void act(async () => setNewKey(await api.createKey(k.role, k.name, k.username || undefined)), 'Key created.');
  };
  const rotate = (row: KeyRow) => void act(async () => setNewKey(await api.rotateKey(row.id)), `Key ${row.id} rotated: the old key no longer works.`);

  return (
    <section className="admin" aria-labelledby="users-title">
      <h2 id="users-title">Users and keys</h2>
      {error && <p className="error" role="alert">{error}</p>}
      {message && <p className="ok" role="status">{message}</p>}
      {newKey && (
        <div className="new-key" role="status">
          <p>New key for <strong>{newKey.name || '(unnamed)'}</strong> ({newKey.role}). It is shown once: copy it now.</p>
          <code data-testid="new-key">{newKey.key}</code>
          <button type="button" onClick={() => setNewKey(null)}>Done</button>
        </div>
      )}

      <h3>Users</h3>
      {users.error && <p className="error" role="alert">{users.error}</p>}
      <table>
        <thead><tr><th scope="col">User</th><th scope="col">Role</th><th scope="col">State</th><th scope="col">Created</th><th scope="col">Actions</th></tr></thead>
        <tbody>
          {users.data?.users.map((row: UserRow) => (
            <tr key={row.id}>
              <td>{row.username}</td>
              <td>
                <label className="visually-hidden" htmlFor={`role-${row.id}`}>Role of {row.username}</label>
                <select id={`role-${row.id}`} value={row.role} onChange={(e) => void act(() => api.updateUser(row.username, { role: e.target.value }), `${row.username} is now ${e.target.value}.`)}>
                  {[...new Set([...KNOWN_ROLES, row.role])].map((r) => <option key={r} value={r}>{r}</option>)}
                </select>
              </td>
              <td>{row.disabled ? 'disabled' : 'active'}</td>
              <td>{when(row.created_at)}</td>
              <td>
                <button type="button" onClick={() => void act(() => api.updateUser(row.username, { disabled: !row.disabled }), `${row.username} ${row.disabled ? 'enabled' : 'disabled'}.`)}>
                  {row.disabled ? 'Enable' : 'Disable'} {row.username}
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <form className="inline-form" onSubmit={createUser} aria-label="Create user">
        <div className="field"><label htmlFor="new-user">User name</label><input id="new-user" required value={u.username} onChange={(e) => setU({ ...u, username: e.target.value })} autoComplete="off" /></div>
        <div className="field"><label htmlFor="new-user-password">Password</label><input id="new-user-password" type="password" required value={u.password} onChange={(e) => setU({ ...u, password: e.target.value })} autoComplete="new-password" /></div>
        <div className="field"><label htmlFor="new-user-role">Role</label>
          <select id="new-user-role" value={u.role} onChange={(e) => setU({ ...u, role: e.target.value })}>{KNOWN_ROLES.map((r) => <option key={r}>{r}</option>)}</select>
        </div>
        <button type="submit">Create user</button>
      </form>

      <h3>API keys</h3>
      {keys.error && <p className="error" role="alert">{keys.error}</p>}
      <table>
        <thead><tr><th scope="col">Key id</th><th scope="col">Name</th><th scope="col">Role</th><th scope="col">Created</th><th scope="col">Last used</th><th scope="col">State</th><th scope="col">Actions</th></tr></thead>
        <tbody>
          {keys.data?.keys.map((row) => (
            <tr key={row.id}>
              <td><code>{row.id}</code></td>
              <td>{row.name}</td>
              <td>{row.role}</td>
              <td>{when(row.created_at)}</td>
              <td>{when(row.last_used_at)}</td>
              <td>{row.revoked_at ? `revoked ${when(row.revoked_at)}` : 'active'}</td>
              <td>
                {!row.revoked_at && <>
                  <button type="button" onClick={() => rotate(row)} aria-label={`Rotate key ${row.id}`}>Rotate</button>
                  <button type="button" onClick={() => void act(() => api.revokeKey(row.id), `Key ${row.id} revoked.`)} aria-label={`Revoke key ${row.id}`}>Revoke</button>
                </>}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <form className="inline-form" onSubmit={createKey} aria-label="Create API key">
        <div className="field"><label htmlFor="new-key-name">Key name</label><input id="new-key-name" value={k.name} onChange={(e) => setK({ ...k, name: e.target.value })} /></div>
        <div className="field"><label htmlFor="new-key-role">Role</label>
          <select id="new-key-role" value={k.role} onChange={(e) => setK({ ...k, role: e.target.value })}>{KNOWN_ROLES.map((r) => <option key={r}>{r}</option>)}</select>
        </div>
        <div className="field"><label htmlFor="new-key-user">For user (optional)</label><input id="new-key-user" value={k.username} onChange={(e) => setK({ ...k, username: e.target.value })} /></div>
        <button type="submit">Create key</button>
      </form>
    </section>
  );
}

function PolicyView({ me }: { me: Me }) {
  const policy = useLoad(async () => {
    try {
      return { policy: await api.policy(), unavailable: null };
    } catch (err) {
      // 501: components that do not publish their policy; 404: a server without the route.
      if (err instanceof ApiError && (err.status === 501 || err.status === 404)) return { policy: null, unavailable: err.status === 501 ? err.message : 'This server does not publish its policy over the API (no GET /api/v1/admin/policy).' };
      throw err;
    }
  });
  return (
    <section className="admin" aria-labelledby="policy-title">
      <h2 id="policy-title">Policy</h2>
      <p>You: {me.caller}, role {me.role}, intensity cap {me.intensity_cap}. Caps come from the server-side role, never from a request.</p>
      {policy.error && <p className="error" role="alert">{policy.error}</p>}
      {policy.data?.unavailable && <p className="warn" role="status">{policy.data.unavailable} See docs/policy.md and the policy file it was started with.</p>}
      {policy.data?.policy && <PolicyTables policy={policy.data.policy} />}
    </section>
  );
}

const sldText = (s: string | Record<string, number>) => (typeof s === 'string' ? s : Object.entries(s).map(([k, v]) => `${k}=${v}`).join(', '));

function PolicyTables({ policy }: { policy: PolicyData }) {
  const o = policy.output_checks;
  return (
    <div data-testid="policy">
      <p>Source: <code>{policy.source}</code> (version {policy.version}). Adult sexual content: {policy.sexual.enabled ? 'enabled for roles that allow it' : 'off'}. Protected persons listed by the operator: {policy.protected_persons}.</p>
      <h3 id="policy-roles">Roles</h3>
      <table aria-labelledby="policy-roles">
        <thead><tr><th scope="col">Role</th><th scope="col">Intensity cap</th><th scope="col">Sexual content</th><th scope="col">Consent workflow</th></tr></thead>
        <tbody>
          {policy.roles.map((r) => (
            <tr key={r.name}><td>{r.name}</td><td>{r.max_intensity}</td><td>{r.sexual ? 'yes' : 'no'}</td><td>{r.consent_workflow ? 'on' : 'off'}</td></tr>
          ))}
        </tbody>
      </table>
      <h3 id="policy-levels">Graded levels (graphic injury)</h3>
      <table aria-labelledby="policy-levels">
        <thead><tr><th scope="col">Level</th><th scope="col">Adapter strength</th><th scope="col">CFG cap</th><th scope="col">SLD when clamped</th></tr></thead>
        <tbody>
          {policy.levels.map((l) => (
            <tr key={l.level}><td>{l.level}</td><td>{l.adapter_strength}</td><td>{l.cfg_scale_max ?? '—'}</td><td>{sldText(l.sld_when_clamped)}</td></tr>
          ))}
        </tbody>
      </table>
      <h3 id="policy-blocked">Hard-blocked categories</h3>
      <table aria-labelledby="policy-blocked">
        <thead><tr><th scope="col">Category</th><th scope="col">Setting</th></tr></thead>
        <tbody>
          {policy.hard_blocked.map((c) => (
            <tr key={c.category}><td>{c.category}</td><td>{c.fixed ? 'always refused (fixed, no policy changes it)' : 'configurable'}</td></tr>
          ))}
        </tbody>
      </table>
      <h3 id="policy-output">Output checks</h3>
      <table aria-labelledby="policy-output">
        <thead><tr><th scope="col">Check</th><th scope="col">Threshold</th></tr></thead>
        <tbody>
          <tr><td>nsfw porn / hentai / sexy</td><td>{o.nsfw.thresholds.porn} / {o.nsfw.thresholds.hentai} / {o.nsfw.thresholds.sexy} (action: {o.nsfw.action})</td></tr>
          <tr><td>minimum apparent face age</td><td>{o.min_face_age}</td></tr>
          <tr><td>protected likeness (cosine)</td><td>{o.likeness_threshold}</td></tr>
          <tr><td>minimum face detection score</td><td>{o.min_face_score}</td></tr>
          <tr><td>photograph threshold (init images)</td><td>{o.photo_threshold}</td></tr>
        </tbody>
      </table>
      <h3 id="policy-semantic">Semantic screening {policy.semantic.enabled ? '(on)' : '(off)'}</h3>
      <table aria-labelledby="policy-semantic">
        <thead><tr><th scope="col">Category</th><th scope="col">Cosine threshold</th></tr></thead>
        <tbody>
          {Object.entries(policy.semantic.thresholds).map(([category, t]) => (
            <tr key={category}><td>{category}</td><td>{t}</td></tr>
          ))}
        </tbody>
      </table>
      <p>Audit log prompts stored as: {policy.audit.prompt_storage === 'hash' ? 'salted hash (HMAC-SHA256)' : 'text'}.</p>
    </div>
  );
}

function AuditSearch() {
  const [q, setQ] = useState({ caller: '', kind: '', q: '' });
  const [entries, setEntries] = useState<Record<string, unknown>[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const search = async (e?: FormEvent) => {
    e?.preventDefault();
    setError(null);
    try {
      setEntries((await api.audit(q)).entries);
    } catch (err) {
      setEntries(null);
      setError(errorText(err));
    }
  };
  useEffect(() => {
    void search();
  }, []);
  return (
    <section className="admin" aria-labelledby="audit-title">
      <h2 id="audit-title">Audit log</h2>
      <form className="inline-form" onSubmit={(e) => void search(e)} aria-label="Search the audit log">
        <div className="field"><label htmlFor="audit-caller">Caller</label><input id="audit-caller" value={q.caller} onChange={(e) => setQ({ ...q, caller: e.target.value })} /></div>
        <div className="field"><label htmlFor="audit-kind">Kind</label>
          <select id="audit-kind" value={q.kind} onChange={(e) => setQ({ ...q, kind: e.target.value })}>
            {['', 'screen', 'generate', 'block', 'admin'].map((k) => <option key={k} value={k}>{k || 'any'}</option>)}
          </select>
        </div>
        <div className="field"><label htmlFor="audit-text">Text</label><input id="audit-text" value={q.q} onChange={(e) => setQ({ ...q, q: e.target.value })} /></div>
        <button type="submit">Search</button>
      </form>
      {error && <p className="error" role="alert">{error}</p>}
      {entries && entries.length === 0 && <p className="muted">No entries match.</p>}
      {entries && entries.length > 0 && (
        <table>
          <thead><tr><th scope="col">When</th><th scope="col">Kind</th><th scope="col">Caller</th><th scope="col">Verdict</th><th scope="col">Entry</th></tr></thead>
          <tbody>
            {entries.map((en, i) => (
              <tr key={String(en.seq ?? en.id ?? i)}>
                <td>{String(en.at ?? en.time ?? en.ts ?? '')}</td>
                <td>{String(en.kind ?? '')}</td>
                <td>{String(en.caller ?? '')}</td>
                <td>{String(en.verdict ?? '')}</td>
                <td><pre className="json">{JSON.stringify(en, null, 1)}</pre></td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

/** Values of one Prometheus metric from the text exposition, keyed by its label set. */
export function metricValues(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  const out: { labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(name) || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, '$1');
    out.push({ labels, value: Number(m[3]) });
  }
  return out;
}

function CountTable({ caption, rows, testId }: { caption: string; rows: [string, number][]; testId: string }) {
  const max = Math.max(1, ...rows.map((r) => r[1]));
  return (
    <table data-testid={testId}>
      <caption>{caption}</caption>
      <thead><tr><th scope="col">Name</th><th scope="col">Count</th><th scope="col"><span className="visually-hidden">Share</span></th></tr></thead>
      <tbody>
        {rows.length === 0 && <tr><td colSpan={3} className="muted">none</td></tr>}
        {rows.map(([k, v]) => <tr key={k}><td>{k}</td><td>{v}</td><td><meter min={0} max={max} value={v} aria-label={`${k}: ${v}`} /></td></tr>)}
      </tbody>
    </table>
  );
}

function Monitoring() {
  const [data, setData] = useState<{ blocks: BlockRow[]; byCategory: Record<string, number>; callers: TopCaller[]; metrics: string | null; metricsError: string | null } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = useCallback(async () => {
    try {
      const [b, c] = await Promise.all([api.blocks(), api.topBlocked()]);
      let metrics: string | null = null;
      let metricsError: string | null = null;
      try {
        metrics = await api.metrics();
      } catch (err) {
        metricsError = errorText(err);
      }
      setData({ blocks: b.blocks, byCategory: b.by_category, callers: c.callers, metrics, metricsError });
      setError(null);
    } catch (err) {
      setError(errorText(err));
    }
  }, []);
  useEffect(() => {
    void load();
    const t = setInterval(() => void load(), 5000);
    return () => clearInterval(t);
  }, [load]);

  const byReason = new Map<string, number>();
  for (const b of data?.blocks ?? []) byReason.set(`${b.stage}: ${b.reason || '(no reason)'}`, (byReason.get(`${b.stage}: ${b.reason || '(no reason)'}`) ?? 0) + 1);
  const queueDepth = data?.metrics ? metricValues(data.metrics, 'redline_queue_depth')[0]?.value : undefined;
  const jobStates = data?.metrics ? metricValues(data.metrics, 'redline_jobs').map((m) => [m.labels.state ?? '?', m.value] as [string, number]) : [];

  return (
    <section className="admin monitoring" aria-labelledby="monitoring-title">
      <h2 id="monitoring-title">Monitoring</h2>
      <p><button type="button" onClick={() => void load()}>Refresh</button> <span className="muted">Refreshes every 5 s.</span></p>
      {error && <p className="error" role="alert">{error}</p>}
      {data && (
        <div className="dashboard">
          <div className="stat" data-testid="queue-depth">
            <span className="stat-value">{queueDepth ?? '?'}</span>
            <span className="stat-label">jobs waiting in the queue</span>
            {data.metricsError && <span className="error">{data.metricsError}</span>}
          </div>
          <CountTable caption="Jobs by state" rows={jobStates} testId="jobs-by-state" />
          <CountTable caption="Blocks by category" rows={Object.entries(data.byCategory).sort((a, b) => b[1] - a[1])} testId="blocks-by-category" />
          <CountTable caption="Blocks by reason" rows={[...byReason].sort((a, b) => b[1] - a[1])} testId="blocks-by-reason" />
          <table data-testid="top-blocked">
            <caption>Top blocked callers</caption>
            <thead><tr><th scope="col">Caller</th><th scope="col">Role</th><th scope="col">Blocks</th><th scope="col">Last</th></tr></thead>
            <tbody>
              {data.callers.length === 0 && <tr><td colSpan={4} className="muted">none</td></tr>}
              {data.callers.map((c) => <tr key={c.caller}><td>{c.caller}</td><td>{c.role}</td><td>{c.blocks}</td><td>{when(c.last_at)}</td></tr>)}
            </tbody>
          </table>
          <table className="wide" data-testid="recent-blocks">
            <caption>Recent blocks</caption>
            <thead><tr><th scope="col">When</th><th scope="col">Caller</th><th scope="col">Stage</th><th scope="col">Categories</th><th scope="col">Reason</th></tr></thead>
            <tbody>
              {data.blocks.length === 0 && <tr><td colSpan={5} className="muted">none</td></tr>}
              {data.blocks.slice(0, 50).map((b) => <tr key={b.id}><td>{when(b.at)}</td><td>{b.caller}</td><td>{b.stage}</td><td>{b.categories.join(', ')}</td><td>{b.reason}</td></tr>)}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
