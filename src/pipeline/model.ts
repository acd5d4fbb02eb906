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

  private constructor(
    readonly path: string,
    readonly checkpoint: Checkpoint,
    readonly tokenizer: ClipTokenizer,
    readonly textEncoder: Session,
    readonly unet: Session,
    readonly vaeDecoder: Session,
    readonly prompts: PromptEncoder,
    private readonly sessionOptions: SessionOptions,
    private readonly onnxDir: string,
  ) {}

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

  /** Rebuilds the text encoder and UNet sessions over other weights (fused adapters). */
  async withWeights(components: { unet: WeightSource; text_encoder: WeightSource }): Promise<{ textEncoder: Session; unet: Session }> {
    const { configs } = this.checkpoint;
    const maxClipSkip = this.prompts.maxClipSkip;
    const textEncoder = await createSession(buildTextEncoder(configs.text_encoder, components.text_encoder, { maxClipSkip }), this.sessionOptions, this.onnxDir);
    const unet = await createSession(buildUnet(configs.unet, components.unet), this.sessionOptions, this.onnxDir);
    return { textEncoder, unet };
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
