// A loaded SD 1.5-family model: checkpoint, tokenizer and one ONNX Runtime session per
// component (text encoder, UNet, VAE decoder; the VAE encoder on first img2img).
import { homedir } from 'node:os';
import { basename, extname, join } from 'node:path';
import type { Graph } from '../graph/graph.ts';
import { compileGraph } from '../runtime/compile.ts';
import type { SD15Configs } from '../models/checkpoint/configs.ts';
import { type Checkpoint, openCheckpoint, type OpenCheckpointOptions } from '../models/checkpoint/load.ts';
import { isOnnxFolder, type OnnxFolder, readOnnxFolder } from '../models/export.ts';
import { buildTextEncoder } from '../models/text-encoder.ts';
import { buildUnet } from '../models/unet.ts';
import { buildVaeDecoder, buildVaeEncoder } from '../models/vae.ts';
import { type Provider, Session, type SessionOptions } from '../runtime/session.ts';
import { loadTokenizer, resolveTokenizerDir, type ClipTokenizer } from '../text/tokenizer.ts';
import { type AdapterStrength, checkStrengths, fusedSources } from '../adapters/fuse.ts';
import { fuseAdaptersFast } from '../adapters/fuse-ort.ts';
import { AdaptedSession, type ComponentPlan, planComponent, planFeeds, RuntimeAdapterFeeds, runtimeModuleHook, slotModules } from '../adapters/graph-lora.ts';
import { buildModuleIndex, type ModuleIndex } from '../adapters/module-index.ts';
import { loadAdapter, type LoadedAdapter } from '../adapters/load.ts';
import { RedlineError } from '../errors.ts';
import { PromptEncoder } from './prompt-encoder.ts';

export interface LoadModelOptions {
  /** Folder with vocab.json + merges.txt (needed for single-file checkpoints). */
  tokenizerDir?: string;
  /** A folder holding an SD 1.5 tokenizer to use when the model carries none. */
  tokenizerCacheDir?: string;
  /** Diffusers folder or config objects for single files whose sizes differ from SD 1.5. */
  configs?: OpenCheckpointOptions['configs'];
  provider?: Provider;
  allowFallback?: boolean;
  threads?: number;
  /** Compile cache for exported, ORT-optimised graphs (default defaultOnnxCacheDir()). */
  onnxDir?: string;
  onProgress?: (what: string) => void;
  /** How adapters are applied (default 'runtime'; see StableDiffusionModel.setAdapters). */
  adapterMode?: AdapterMode;
  /** Adapter sessions kept per component (default 2): each different combination of
   * adapter targets and ranks is a session; strengths and same-shape swaps are not. */
  adapterSessionLimit?: number;
}

export type AdapterMode = 'runtime' | 'fused';

/** Text-encoder adapter states whose prompt encodings are kept. */
const PROMPT_ENCODER_STATES = 4;

export class StableDiffusionModel {
  private vaeEncoderSession: Promise<Session> | null = null;
  private moduleIndex: ModuleIndex | null = null;
  private readonly adapterCache = new Map<string, LoadedAdapter>();
  private readonly feedsCache = new WeakMap<LoadedAdapter, RuntimeAdapterFeeds>();
  /** Adapter graphs' sessions by component + runtime signature, least recently used first. */
  private readonly runtimeSessions = new Map<string, Session>();
  /** The base text encoder's prompt encoder, kept apart from the evictable states below. */
  private readonly basePromptEncoder: PromptEncoder;
  /** Prompt encoders by text-encoder adapter state, with the session their graph runs on. */
  private readonly promptEncoders = new Map<string, { encoder: PromptEncoder; graph: Session }>();
  private fused: { signature: string; te: Session; unet: Session } | null = null;
  private adapterBuilds = 0;
  private textEncoderSession: Session;
  private unetSession: Session;
  private readonly adapterMode: AdapterMode;
  private readonly adapterSessionLimit: number;
  readonly configs: SD15Configs;

  private constructor(
    readonly path: string,
    /** null for an exported ONNX folder (src/models/export.ts): sessions only, no weights. */
    readonly checkpoint: Checkpoint | null,
    readonly tokenizer: ClipTokenizer,
    private readonly baseTextEncoder: Session,
    private readonly baseUnet: Session,
    readonly vaeDecoder: Session,
    private promptEncoder: PromptEncoder,
    private readonly sessionOptions: SessionOptions,
    private readonly onnxDir: string,
    opts: Pick<LoadModelOptions, 'adapterMode' | 'adapterSessionLimit'> = {},
    private readonly onnxFolder: OnnxFolder | null = null,
  ) {
    this.configs = checkpoint?.configs ?? onnxFolder!.manifest.configs;
    this.textEncoderSession = baseTextEncoder;
    this.unetSession = baseUnet;
    this.promptEncoders.set('', { encoder: promptEncoder, graph: baseTextEncoder });
    this.basePromptEncoder = promptEncoder;
    this.adapterMode = opts.adapterMode ?? 'runtime';
    const limit = opts.adapterSessionLimit ?? 2;
    if (!Number.isInteger(limit) || limit < 1) throw new RedlineError('bad_option', `adapterSessionLimit must be a whole number >= 1, got ${limit}.`);
    this.adapterSessionLimit = limit;
  }

  private get maxClipSkip(): number {
    return this.promptEncoder.maxClipSkip;
  }

  get textEncoder(): Session {
    return this.textEncoderSession;
  }

  get unet(): Session {
    return this.unetSession;
  }

  get prompts(): PromptEncoder {
    return this.promptEncoder;
  }

  /** The prompt encoder of the text encoder without runtime or fused adapters (an exported ONNX folder's own, adapters fused at export included). */
  get basePrompts(): PromptEncoder {
    return this.basePromptEncoder;
  }

  /** The checkpoint's name as A1111 shows it: the file (or folder) name without extension. */
  get name(): string {
    const b = basename(this.path);
    return extname(b) === '.safetensors' ? b.slice(0, -'.safetensors'.length) : b;
  }

  get vaeScalingFactor(): number {
    return (this.configs.vae.scaling_factor as number | undefined) ?? 0.18215;
  }

  get provider(): Provider {
    return this.unet.provider;
  }

  static async load(path: string, opts: LoadModelOptions = {}): Promise<StableDiffusionModel> {
    if (isOnnxFolder(path)) return StableDiffusionModel.loadOnnxFolder(path, opts);
    const progress = opts.onProgress ?? (() => {});
    const checkpoint = openCheckpoint(path, opts.configs ? { configs: opts.configs } : {});
    try {
      const tokenizerDir = resolveTokenizerDir({
        ...(opts.tokenizerDir !== undefined ? { explicit: opts.tokenizerDir } : {}),
        modelPath: path,
        ...(opts.tokenizerCacheDir !== undefined ? { cacheDir: opts.tokenizerCacheDir } : {}),
      });
      const tokenizer = loadTokenizer(tokenizerDir);
      const sessionOptions: SessionOptions = {
        provider: opts.provider ?? 'cpu',
        allowFallback: opts.allowFallback ?? false,
        ...(opts.threads ? { threads: opts.threads } : {}),
      };
      const onnxDir = opts.onnxDir ?? defaultOnnxCacheDir();
      const { configs, components } = checkpoint;
      progress('text encoder');
      const teCfg = configs.text_encoder;
      const maxClipSkip = Math.min(teCfg.num_hidden_layers, 12);
      const textEncoder = await createSession(buildTextEncoder(teCfg, components.text_encoder, { maxClipSkip }), sessionOptions, onnxDir);
      progress('unet');
      const unet = await createSession(buildUnet(configs.unet, components.unet), sessionOptions, onnxDir);
      progress('vae decoder');
      const vaeDecoder = await createSession(buildVaeDecoder(configs.vae, components.vae), sessionOptions, onnxDir);
      const prompts = new PromptEncoder(tokenizer, textEncoder, teCfg.hidden_size, maxClipSkip);
      return new StableDiffusionModel(path, checkpoint, tokenizer, textEncoder, unet, vaeDecoder, prompts, sessionOptions, onnxDir, opts);
    } catch (err) {
      checkpoint.close();
      throw err;
    }
  }

  /** A folder written by `redline merge --onnx` (its manifest checked, hashes included):
   * the exported sessions run as they are; adapters were fused at export. */
  private static async loadOnnxFolder(path: string, opts: LoadModelOptions): Promise<StableDiffusionModel> {
    const folder = readOnnxFolder(path);
    const tokenizer = loadTokenizer(opts.tokenizerDir ?? folder.tokenizerDir);
    const sessionOptions: SessionOptions = { provider: opts.provider ?? 'cpu', allowFallback: opts.allowFallback ?? false, ...(opts.threads ? { threads: opts.threads } : {}) };
    const [textEncoder, unet, vaeDecoder] = await Promise.all(
      (['text_encoder', 'unet', 'vae_decoder'] as const).map((c) => Session.create(folder.modelPath(c), sessionOptions)),
    );
    const { maxClipSkip, configs } = folder.manifest;
    const prompts = new PromptEncoder(tokenizer, textEncoder!, configs.text_encoder.hidden_size, maxClipSkip);
    return new StableDiffusionModel(path, null, tokenizer, textEncoder!, unet!, vaeDecoder!, prompts, sessionOptions, '', opts, folder);
  }

  /** The VAE encoder, built on first use (only img2img needs it). */
  vaeEncoder(): Promise<Session> {
    this.vaeEncoderSession ??= this.onnxFolder
      ? Session.create(this.onnxFolder.modelPath('vae_encoder'), this.sessionOptions)
      : createSession(buildVaeEncoder(this.configs.vae, this.weights('img2img').components.vae), this.sessionOptions, this.onnxDir);
    return this.vaeEncoderSession;
  }

  /** The checkpoint, for what needs weights; an exported ONNX folder has none to offer. */
  private weights(what: string): Checkpoint {
    if (!this.checkpoint) {
      throw new RedlineError('onnx_folder_fixed', `${this.name} is an exported ONNX folder: ${what} needs the original weights.`, 'Export the folder again with the adapters fused (`redline merge --onnx`), or load the original checkpoint.');
    }
    return this.checkpoint;
  }

  /** Reads an adapter file matched against this model (cached per path). */
  loadAdapter(path: string): LoadedAdapter {
    let a = this.adapterCache.get(path);
    if (!a) {
      this.moduleIndex ??= buildModuleIndex(this.weights('a LoRA adapter'));
      a = loadAdapter(path, this.moduleIndex);
      this.adapterCache.set(path, a);
    }
    return a;
  }

  /**
   * Makes the text encoder and UNet run with these adapters at these strengths (none, or all
   * strengths 0: the base graphs, with no adapter cost).
   *
   * 'runtime' (default): the adapters are graph inputs. A strength change only changes a
   * feed; an adapter with the same targets, forms and ranks as one seen before reuses that
   * session with new tensors; a new combination builds a session once and keeps it (a few
   * per component, least recently used dropped).
   * 'fused': the adapters are baked into copies of the affected weights and the sessions
   * rebuilt on every change (what `redline merge` exports; no per-step adapter cost).
   */
  async setAdapters(adapters: AdapterStrength[], opts: { mode?: AdapterMode } = {}): Promise<void> {
    checkStrengths(adapters);
    const mode = opts.mode ?? this.adapterMode;
    if (mode === 'fused') return this.setFused(adapters);
    if (mode !== 'runtime') throw new RedlineError('bad_option', `Adapter mode "${String(mode)}" is not known.`, 'Use runtime or fused.');
    const entries = adapters.map((a) => ({ feeds: this.runtimeFeeds(a.adapter), te: a.te, unet: a.unet }));
    const tePlan = planComponent('text_encoder', entries.map((e) => ({ feeds: e.feeds, strength: e.te })));
    const unetPlan = planComponent('unet', entries.map((e) => ({ feeds: e.feeds, strength: e.unet })));
    const te = await this.runtimeSession(tePlan, this.baseTextEncoder);
    const unet = await this.runtimeSession(unetPlan, this.baseUnet);
    await this.dropFused();
    this.textEncoderSession = te;
    this.unetSession = unet;
    this.usePromptEncoder(tePlan.slots.length === 0 ? '' : `runtime\u0000${tePlan.key}\u0000${tePlan.slots.map((s) => `${s.feeds.adapter.path}\u0000${s.strength}`).join('\u0001')}`);
  }

  /** How many adapter sessions were built since load (for tests and diagnostics). */
  get adapterSessionBuilds(): number {
    return this.adapterBuilds;
  }

  private runtimeFeeds(adapter: LoadedAdapter): RuntimeAdapterFeeds {
    let f = this.feedsCache.get(adapter);
    if (!f) {
      f = new RuntimeAdapterFeeds(adapter);
      this.feedsCache.set(adapter, f);
    }
    return f;
  }

  /** The base session for an empty plan, else the cached (or newly built) adapter graph's
   * session wrapped with this plan's feeds. */
  private async runtimeSession(plan: ComponentPlan, base: Session): Promise<Session> {
    if (!plan.slots.length) return base;
    const key = `${plan.component}\u0000${plan.key}`;
    let session = this.runtimeSessions.get(key);
    if (session) {
      this.runtimeSessions.delete(key); // re-inserted below: most recently used last
    } else {
      session = await this.buildAdapted(plan);
      this.adapterBuilds++;
      const sameComponent = [...this.runtimeSessions.keys()].filter((k) => k.startsWith(`${plan.component}\u0000`));
      // The oldest of this component goes; it is not the one running now (that one is the
      // component's most recent entry, and the limit is at least 1).
      for (const old of sameComponent.slice(0, Math.max(0, sameComponent.length - this.adapterSessionLimit + 1))) {
        const s = this.runtimeSessions.get(old)!;
        this.runtimeSessions.delete(old);
        await s.release();
      }
    }
    this.runtimeSessions.set(key, session);
    return new AdaptedSession(session, planFeeds(plan)) as unknown as Session;
  }

  private async buildAdapted(plan: ComponentPlan): Promise<Session> {
    const { configs, components } = this.weights('a LoRA adapter');
    const hook = runtimeModuleHook(plan.component, slotModules(plan));
    const graph = plan.component === 'text_encoder'
      ? buildTextEncoder(configs.text_encoder, components.text_encoder, { maxClipSkip: this.maxClipSkip, moduleHook: hook })
      : buildUnet(configs.unet, components.unet, { moduleHook: hook });
    const missing = hook.unvisited();
    if (missing.length) {
      throw new RedlineError('adapter_unmatched', `${missing.length} adapter modules are not in the ${plan.component === 'unet' ? 'UNet' : 'text encoder'} graph (first: ${missing[0]}).`, 'The adapter was matched against another model; reload it for this one.');
    }
    return createSession(graph, this.sessionOptions, this.onnxDir);
  }

  /** The fused path: adapters baked into copies of the affected weights, both sessions rebuilt. */
  private async setFused(adapters: AdapterStrength[]): Promise<void> {
    const active = adapters.filter((a) => a.te !== 0 || a.unet !== 0);
    const signature = active.map((a) => `${a.adapter.path}\u0000${a.te}\u0000${a.unet}`).join('\u0001');
    if (!active.length) {
      await this.dropFused();
      this.textEncoderSession = this.baseTextEncoder;
      this.unetSession = this.baseUnet;
      this.usePromptEncoder('');
      return;
    }
    if (this.fused?.signature === signature) {
      this.textEncoderSession = this.fused.te;
      this.unetSession = this.fused.unet;
      this.usePromptEncoder(`fused\u0000${signature}`);
      return;
    }
    const { configs, components: base } = this.weights('a LoRA adapter');
    const sources = fusedSources(base, await fuseAdaptersFast(base, active));
    const te = await createSession(buildTextEncoder(configs.text_encoder, sources.text_encoder, { maxClipSkip: this.maxClipSkip }), this.sessionOptions, this.onnxDir);
    const unet = await createSession(buildUnet(configs.unet, sources.unet), this.sessionOptions, this.onnxDir);
    await this.dropFused();
    this.fused = { signature, te, unet };
    this.textEncoderSession = te;
    this.unetSession = unet;
    this.usePromptEncoder(`fused\u0000${signature}`);
  }

  private async dropFused(): Promise<void> {
    if (!this.fused) return;
    const { te, unet } = this.fused;
    this.fused = null;
    for (const k of [...this.promptEncoders.keys()]) if (k.startsWith('fused\u0000')) this.promptEncoders.delete(k);
    await Promise.all([te.release(), unet.release()]);
  }

  /** Prompt encodings are cached per text-encoder state: switching back to an adapter state
   * seen recently finds its encodings again; a new state never sees stale ones. */
  private usePromptEncoder(teState: string): void {
    const running = this.textEncoderSession as unknown;
    const graph = running instanceof AdaptedSession ? running.session : this.textEncoderSession;
    let entry = this.promptEncoders.get(teState);
    this.promptEncoders.delete(teState);
    // An entry whose graph's session was evicted (and released) since is not reused.
    if (!entry || entry.graph !== graph) {
      entry = { encoder: new PromptEncoder(this.tokenizer, this.textEncoderSession, this.promptEncoder.width, this.maxClipSkip), graph };
    }
    this.promptEncoders.set(teState, entry);
    while (this.promptEncoders.size > PROMPT_ENCODER_STATES) this.promptEncoders.delete(this.promptEncoders.keys().next().value!);
    this.promptEncoder = entry.encoder;
  }

  async release(): Promise<void> {
    await this.dropFused();
    const sessions = [this.baseTextEncoder, this.baseUnet, this.vaeDecoder, ...this.runtimeSessions.values()];
    this.runtimeSessions.clear();
    if (this.vaeEncoderSession) sessions.push(await this.vaeEncoderSession);
    await Promise.all(sessions.map((s) => s.release()));
    this.checkpoint?.close();
  }
}

/** $REDLINE_CACHE_DIR/onnx, else ~/.cache/redline/onnx. */
export function defaultOnnxCacheDir(): string {
  return join(process.env.REDLINE_CACHE_DIR ?? join(homedir(), '.cache', 'redline'), 'onnx');
}


/**
 * Sessions go through the runtime's compile cache: large graphs whose weights come from
 * checkpoint files are exported once and kept as ORT optimised them, so the next load of
 * the same checkpoint maps its weights in about a second instead of a minute of ORT's
 * constant folding. Graphs with computed weights (fused adapters) are not cached.
 */
async function createSession(graph: Graph, opts: SessionOptions, cacheDir: string): Promise<Session> {
  return compileGraph(graph, { ...opts, cacheDir });
}
