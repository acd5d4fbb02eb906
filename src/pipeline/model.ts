// A loaded SD 1.5-family model: checkpoint, tokenizer and one ONNX Runtime session per
// component (text encoder, UNet, VAE decoder; the VAE encoder on first img2img).
import { mkdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, extname, join } from 'node:path';
import { createHash } from 'node:crypto';
import type { Graph } from '../graph/graph.ts';
import { exportOnnx, writeOnnx } from '../graph/onnx.ts';
import { type Checkpoint, openCheckpoint, type OpenCheckpointOptions } from '../models/checkpoint/load.ts';
import { buildTextEncoder } from '../models/text-encoder.ts';
import { buildUnet } from '../models/unet.ts';
import { buildVaeDecoder, buildVaeEncoder } from '../models/vae.ts';
import type { WeightSource } from '../models/weights.ts';
import { type Provider, Session, type SessionOptions } from '../runtime/session.ts';
import { loadTokenizer, resolveTokenizerDir, type ClipTokenizer } from '../text/tokenizer.ts';
import { type AdapterStrength, fuseAdapters, fusedSources } from '../adapters/fuse.ts';
import { buildModuleIndex, type ModuleIndex } from '../adapters/module-index.ts';
import { loadAdapter, type LoadedAdapter } from '../adapters/load.ts';
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
  /** Where exported ONNX graphs of large models go (default: the OS temp folder). */
  onnxDir?: string;
  onProgress?: (what: string) => void;
}

/** Above this many parameters a graph is written to disk with external data (ORT maps the
 * file) instead of being serialised in memory: protobuf messages are limited to 2 GB. */
const IN_MEMORY_PARAMETER_LIMIT = 50_000_000;

export class StableDiffusionModel {
  private vaeEncoderSession: Promise<Session> | null = null;
  private moduleIndex: ModuleIndex | null = null;
  private readonly adapterCache = new Map<string, LoadedAdapter>();
  /** Identifies the adapters (files and strengths) baked into the current sessions. */
  private adapterSignature = '';

  private constructor(
    readonly path: string,
    readonly checkpoint: Checkpoint,
    readonly tokenizer: ClipTokenizer,
    private textEncoderSession: Session,
    private unetSession: Session,
    readonly vaeDecoder: Session,
    private promptEncoder: PromptEncoder,
    private readonly sessionOptions: SessionOptions,
    private readonly onnxDir: string,
  ) {}

  get textEncoder(): Session {
    return this.textEncoderSession;
  }

  get unet(): Session {
    return this.unetSession;
  }

  get prompts(): PromptEncoder {
    return this.promptEncoder;
  }

  /** The checkpoint's name as A1111 shows it: the file (or folder) name without extension. */
  get name(): string {
    const b = basename(this.path);
    return extname(b) === '.safetensors' ? b.slice(0, -'.safetensors'.length) : b;
  }

  get vaeScalingFactor(): number {
    return (this.checkpoint.configs.vae.scaling_factor as number | undefined) ?? 0.18215;
  }

  get provider(): Provider {
    return this.unet.provider;
  }

  static async load(path: string, opts: LoadModelOptions = {}): Promise<StableDiffusionModel> {
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
      const onnxDir = opts.onnxDir ?? join(tmpdir(), 'redline-onnx', cacheKey(path));
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
      return new StableDiffusionModel(path, checkpoint, tokenizer, textEncoder, unet, vaeDecoder, prompts, sessionOptions, onnxDir);
    } catch (err) {
      checkpoint.close();
      throw err;
    }
  }

  /** The VAE encoder, built on first use (only img2img needs it). */
  vaeEncoder(): Promise<Session> {
    this.vaeEncoderSession ??= createSession(
      buildVaeEncoder(this.checkpoint.configs.vae, this.checkpoint.components.vae),
      this.sessionOptions,
      this.onnxDir,
    );
    return this.vaeEncoderSession;
  }

  /** Reads an adapter file matched against this model (cached per path). */
  loadAdapter(path: string): LoadedAdapter {
    let a = this.adapterCache.get(path);
    if (!a) {
      this.moduleIndex ??= buildModuleIndex(this.checkpoint);
      a = loadAdapter(path, this.moduleIndex);
      this.adapterCache.set(path, a);
    }
    return a;
  }

  /**
   * Makes the text encoder and UNet run with these adapters at these strengths (none:
   * the base weights). The adapters are fused into copies of the affected weights and the
   * two sessions rebuilt; an unchanged set costs nothing.
   */
  async setAdapters(adapters: AdapterStrength[]): Promise<void> {
    const active = adapters.filter((a) => a.te !== 0 || a.unet !== 0);
    const signature = active.map((a) => `${a.adapter.path}\u0000${a.te}\u0000${a.unet}`).join('\u0001');
    if (signature === this.adapterSignature) return;
    const base = this.checkpoint.components;
    const sources = active.length ? fusedSources(base, fuseAdapters(base, active)) : base;
    await this.rebuild(sources);
    this.adapterSignature = signature;
  }

  private async rebuild(components: { unet: WeightSource; text_encoder: WeightSource }): Promise<void> {
    const { configs } = this.checkpoint;
    const maxClipSkip = this.promptEncoder.maxClipSkip;
    const textEncoder = await createSession(buildTextEncoder(configs.text_encoder, components.text_encoder, { maxClipSkip }), this.sessionOptions, this.onnxDir);
    const unet = await createSession(buildUnet(configs.unet, components.unet), this.sessionOptions, this.onnxDir);
    await Promise.all([this.textEncoderSession.release(), this.unetSession.release()]);
    this.textEncoderSession = textEncoder;
    this.unetSession = unet;
    this.promptEncoder = new PromptEncoder(this.tokenizer, textEncoder, this.promptEncoder.width, maxClipSkip);
  }

  async release(): Promise<void> {
    const sessions = [this.textEncoder, this.unet, this.vaeDecoder];
    if (this.vaeEncoderSession) sessions.push(await this.vaeEncoderSession);
    await Promise.all(sessions.map((s) => s.release()));
    this.checkpoint.close();
  }
}

function cacheKey(path: string): string {
  const st = statSync(path);
  return createHash('sha256').update(`${path}\0${st.size}\0${st.mtimeMs}`).digest('hex').slice(0, 16);
}

async function createSession(graph: Graph, opts: SessionOptions, onnxDir: string): Promise<Session> {
  if (graph.parameterCount() <= IN_MEMORY_PARAMETER_LIMIT) return Session.create(exportOnnx(graph), opts);
  const dir = join(onnxDir, graph.name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const { modelPath } = writeOnnx(graph, dir);
  return Session.create(modelPath, opts);
}
