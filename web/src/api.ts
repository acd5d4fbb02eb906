// The studio's only door to the server: the native API under /api/v1 (src/service/routes).
// The session cookie is httpOnly and SameSite=Strict; requests that change state also send
// the session's CSRF token in x-csrf-token, as src/service/auth.ts requires.

export interface Me {
  caller: string;
  role: string;
  via: string;
  intensity_cap: number;
  can_generate: boolean;
  can_admin: boolean;
  csrf_token?: string;
}

export interface IntensityView {
  requested: number;
  effective: number;
  verdict: 'allow' | 'clamp' | 'refuse' | string;
  reason: string;
}

export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface JobView {
  id: string;
  mode: 'txt2img' | 'img2img';
  state: JobState;
  attempts: number;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  progress: { step: number; total: number };
  error: string | null;
  intensity: IntensityView;
  image_count: number;
}

export interface ProvenanceView {
  status: string;
  parameters?: boolean;
  xmp?: boolean;
  c2pa?: string;
  watermark?: boolean;
}

export interface ResultImage {
  index: number;
  url: string;
  png_base64: string;
  infotext: string;
  seed: number;
  provenance: ProvenanceView;
}

export interface JobResult {
  job: JobView;
  images: ResultImage[];
  info: Record<string, unknown>;
}

export interface Sampler { name: string; aliases: string[] }
export interface Adapter { name: string; alias: string; metadata: Record<string, unknown> }
export interface ModelInfo { title: string; model_name: string }

export interface JobRequest {
  mode: 'txt2img' | 'img2img';
  prompt: string;
  negative_prompt: string;
  adapters: { name: string; weight: number }[];
  sampler_name: string;
  steps: number;
  cfg_scale: number;
  seed: number;
  width: number;
  height: number;
  batch_size: number;
  n_iter: number;
  denoising_strength?: number;
  init_images?: string[];
  intensity: number | null;
  /** txt2img: A1111's hires fix; width x height is the first pass. */
  hires?: HiresRequest;
}

export interface HiresRequest {
  scale: number;
  upscaler: string;
  /** 0 = the first pass's steps. */
  second_pass_steps: number;
  denoising_strength: number;
  /** The second pass's prompts and sampler (A1111's hr_prompt, hr_negative_prompt, hr_sampler_name); null = the first pass's. */
  prompt: string | null;
  negative_prompt: string | null;
  sampler_name: string | null;
}

/** A1111's choice for "the first pass's sampler" in the hires sampler list. */
export const SAME_SAMPLER = 'Use same sampler';

/** The hires upscalers the server knows (src/pipeline/hires.ts HIRES_UPSCALERS). */
export const HIRES_UPSCALERS = ['Latent', 'Latent (antialiased)', 'Latent (bicubic)', 'Latent (bicubic antialiased)', 'Latent (nearest)', 'Latent (nearest-exact)', 'None', 'Lanczos', 'Nearest'];

export interface KeyRow { id: string; name: string; role: string; user_id: number | null; created_at: string; last_used_at: string | null; revoked_at: string | null }
export interface UserRow { id: number; username: string; role: string; disabled: boolean; created_at: string }
export interface BlockRow { id: number; at: string; caller: string; role: string; stage: string; categories: string[]; reason: string; job_id: string | null }
/** GET /api/v1/admin/policy: the policy in force, without secrets. */
export interface PolicyView {
  source: string;
  version: number;
  roles: { name: string; max_intensity: number; sexual: boolean; consent_workflow: boolean }[];
  sexual: { enabled: boolean };
  levels: { level: number; adapter_strength: number; cfg_scale_max: number | null; sld_when_clamped: string | Record<string, number> }[];
  hard_blocked: { category: string; fixed: boolean }[];
  protected_persons: number;
  output_checks: {
    nsfw: { thresholds: { porn: number; hentai: number; sexy: number }; action: string };
    min_face_age: number; likeness_threshold: number; min_face_score: number; photo_threshold: number;
  };
  semantic: { enabled: boolean; thresholds: Record<string, number> };
  audit: { prompt_storage: string };
}
export interface TopCaller { caller: string; role: string; blocks: number; last_at: string }

/** An error the server answered, with its message meant for people. */
export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

let csrfToken: string | null = null;

export function setCsrfToken(token: string | null): void {
  csrfToken = token;
}

async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  // x-requested-with: the server then leaves the Basic challenge out of a 401, which
  // would otherwise open the browser's own password dialog (src/service/auth.ts).
  const headers: Record<string, string> = { accept: 'application/json', 'x-requested-with': 'XMLHttpRequest' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrfToken) headers['x-csrf-token'] = csrfToken;
  let res: Response;
  try {
    res = await fetch(path, { method, headers, credentials: 'same-origin', ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  } catch {
    throw new ApiError(0, 'network', 'The server cannot be reached. Check that redline serve is running.');
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let data: unknown = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // A non-JSON answer (metrics, proxies): handled below.
  }
  if (!res.ok) {
    const err = (data as { error?: { code?: string; message?: string } } | null)?.error;
    let message = err?.message ?? `The server answered HTTP ${res.status}.`;
    const retry = res.headers.get('retry-after');
    if (res.status === 429 && retry) message += ` Try again in ${retry} s.`;
    throw new ApiError(res.status, err?.code ?? 'http_error', message);
  }
  return (data ?? text) as T;
}

export const api = {
  signIn: (username: string, password: string) =>
    request<{ username: string; role: string; intensity_cap: number; csrf_token: string }>('POST', '/api/v1/session', { username, password }),
  signOut: () => request<void>('DELETE', '/api/v1/session'),
  me: () => request<Me>('GET', '/api/v1/me'),
  samplers: () => request<{ samplers: Sampler[] }>('GET', '/api/v1/samplers'),
  adapters: () => request<{ adapters: Adapter[] }>('GET', '/api/v1/adapters'),
  models: () => request<{ current: string | null; models: ModelInfo[] }>('GET', '/api/v1/models'),
  submit: (job: JobRequest) => request<JobView>('POST', '/api/v1/jobs', job),
  job: (id: string) => request<JobView>('GET', `/api/v1/jobs/${encodeURIComponent(id)}`),
  jobs: (state?: JobState) => request<{ jobs: JobView[] }>('GET', `/api/v1/jobs?limit=50${state ? `&state=${state}` : ''}`),
  cancel: (id: string) => request<JobView>('POST', `/api/v1/jobs/${encodeURIComponent(id)}/cancel`),
  result: (id: string) => request<JobResult>('GET', `/api/v1/jobs/${encodeURIComponent(id)}/result`),
  eventsUrl: (id: string) => `/api/v1/jobs/${encodeURIComponent(id)}/events`,

  keys: () => request<{ keys: KeyRow[] }>('GET', '/api/v1/admin/keys'),
  createKey: (role: string, name: string, username?: string) =>
    request<{ key: string; id: string; role: string; name: string }>('POST', '/api/v1/admin/keys', { role, name, ...(username ? { username } : {}) }),
  revokeKey: (id: string) => request<KeyRow>('POST', `/api/v1/admin/keys/${encodeURIComponent(id)}/revoke`),
  rotateKey: (id: string) => request<{ key: string; id: string; role: string; name: string }>('POST', `/api/v1/admin/keys/${encodeURIComponent(id)}/rotate`),
  users: () => request<{ users: UserRow[] }>('GET', '/api/v1/admin/users'),
  createUser: (username: string, password: string, role: string) => request<UserRow>('POST', '/api/v1/admin/users', { username, password, role }),
  updateUser: (username: string, patch: { role?: string; disabled?: boolean; password?: string }) =>
    request<UserRow>('PATCH', `/api/v1/admin/users/${encodeURIComponent(username)}`, patch),
  blocks: () => request<{ blocks: BlockRow[]; by_category: Record<string, number> }>('GET', '/api/v1/admin/blocks?limit=200'),
  topBlocked: () => request<{ callers: TopCaller[] }>('GET', '/api/v1/admin/blocks/top-callers?limit=10'),
  audit: (q: { caller?: string; kind?: string; q?: string }) => {
    const params = new URLSearchParams({ limit: '100' });
    for (const [k, v] of Object.entries(q)) if (v) params.set(k, v);
    return request<{ entries: Record<string, unknown>[] }>('GET', `/api/v1/admin/audit?${params}`);
  },
  policy: () => request<PolicyView>('GET', '/api/v1/admin/policy'),
  metrics: () => request<string>('GET', '/metrics'),
};

/** The message to show for any failure: the server's own words for API errors. */
export function errorText(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  if (err instanceof Error) return err.message;
  return String(err);
}
