// Running models: build the graph, compile it on a provider, and check inputs before they
// reach ORT (an ORT shape error names internal nodes; ours names the argument).

import { RedlineError } from '../errors.ts';
import { compileGraph, type CompileOptions } from '../runtime/compile.ts';
import type { Provider, Session } from '../runtime/session.ts';
import { Tensor } from '../tensor/tensor.ts';
import type { CLIPTextConfig, UNetConfig } from './checkpoint/configs.ts';
import { buildTextEncoder, type TextEncoderBuildOptions } from './text-encoder.ts';
import { buildUnet, type UnetBuildOptions } from './unet.ts';
import type { WeightSource } from './weights.ts';

function badInput(what: string, hint?: string): RedlineError {
  return new RedlineError('model_input', what, hint);
}

function checkFloat(name: string, t: Tensor, rank: number): void {
  if (t.dtype !== 'f32') throw badInput(`${name} must be f32, got ${t.dtype}.`);
  if (t.shape.length !== rank) throw badInput(`${name} must have rank ${rank}, got shape [${t.shape.join(', ')}].`);
}

export interface TextEncoderOutput {
  /** [batch, 77, hidden]: final_layer_norm(hidden_states[-clipSkip]). */
  hidden: Tensor;
  /** [batch, hidden]: last_hidden_state at the first EOS (independent of clip skip). */
  pooled: Tensor;
}

export class TextEncoderSession {
  private constructor(
    readonly session: Session,
    readonly config: CLIPTextConfig,
    readonly maxClipSkip: number,
  ) {}

  static async create(config: CLIPTextConfig, weights: WeightSource, opts: CompileOptions & TextEncoderBuildOptions = {}): Promise<TextEncoderSession> {
    const graph = buildTextEncoder(config, weights, { widenWeights: !!opts.cacheDir, ...opts });
    const maxSkip = graph.outputs.filter((o) => o.name.startsWith('clip_skip_')).length + 1;
    return new TextEncoderSession(await compileGraph(graph, opts), config, maxSkip);
  }

  get provider(): Provider {
    return this.session.provider;
  }

  /** `ids`: token ids, one row of max_position_embeddings (77) per prompt. `clipSkip` 1 =
   * last layer (A1111 semantics: N uses hidden_states[-N] through final_layer_norm). */
  async run(ids: Tensor | readonly (readonly number[])[], opts: { clipSkip?: number } = {}): Promise<TextEncoderOutput> {
    const n = this.config.max_position_embeddings;
    let t: Tensor;
    if (ids instanceof Tensor) {
      if (ids.shape.length !== 2 || ids.shape[1] !== n) throw badInput(`input ids must be [batch, ${n}], got [${ids.shape.join(', ')}].`);
      t = ids.dtype === 'i64' ? ids : new Tensor('i64', ids.shape, BigInt64Array.from(ids.toFloat32(), (v) => BigInt(v)));
    } else {
      if (ids.length === 0) throw badInput('no token ids given.');
      const flat = new BigInt64Array(ids.length * n);
      ids.forEach((row, b) => {
        if (row.length !== n) throw badInput(`token row ${b} has ${row.length} ids; the text encoder takes exactly ${n} (pad with the EOS id).`);
        row.forEach((v, i) => {
          if (!Number.isInteger(v) || v < 0 || v >= this.config.vocab_size) throw badInput(`token id ${v} in row ${b} is outside the vocabulary (0..${this.config.vocab_size - 1}).`);
          flat[b * n + i] = BigInt(v);
        });
      });
      t = new Tensor('i64', [ids.length, n], flat);
    }
    const skip = opts.clipSkip ?? 1;
    if (!Number.isInteger(skip) || skip < 1 || skip > this.maxClipSkip) {
      throw badInput(`clip skip ${skip} is out of range.`, `Use 1 (last layer) to ${this.maxClipSkip}.`);
    }
    const hiddenName = skip === 1 ? 'last_hidden_state' : `clip_skip_${skip}`;
    const out = await this.session.run({ input_ids: t }, [hiddenName, 'pooled_output']);
    return { hidden: out[hiddenName]!, pooled: out.pooled_output! };
  }

  release(): Promise<void> {
    return this.session.release();
  }
}

export class UnetSession {
  private constructor(
    readonly session: Session,
    readonly config: UNetConfig,
  ) {}

  static async create(config: UNetConfig, weights: WeightSource, opts: CompileOptions & UnetBuildOptions = {}): Promise<UnetSession> {
    return new UnetSession(await compileGraph(buildUnet(config, weights, { widenWeights: !!opts.cacheDir, ...opts }), opts), config);
  }

  /** Wraps a session already created from a buildUnet graph (benchmarks, custom export). */
  static fromSession(session: Session, config: UNetConfig): UnetSession {
    return new UnetSession(session, config);
  }

  get provider(): Provider {
    return this.session.provider;
  }

  /** Noise prediction for `latents` [B, C, h, w] at `timestep` (one value, or one per batch
   * item; fractional values allowed) given `encoderHiddenStates` [B, S, cross_dim].
   * `out` ([B, C, h, w] f32) is written in place when given, so a sampler can reuse it. */
  async run(latents: Tensor, timestep: number | readonly number[] | Float32Array, encoderHiddenStates: Tensor, out?: Tensor): Promise<Tensor> {
    const cfg = this.config;
    checkFloat('latents', latents, 4);
    checkFloat('encoder hidden states', encoderHiddenStates, 3);
    const [b, c, h, w] = latents.shape as [number, number, number, number];
    if (c !== cfg.in_channels) throw badInput(`latents have ${c} channels, the UNet takes ${cfg.in_channels}.`);
    if (h < 1 || w < 1) throw badInput(`latents have an empty spatial size ${h}x${w}.`);
    const [eb, , ed] = encoderHiddenStates.shape as [number, number, number];
    if (eb !== b) throw badInput(`encoder hidden states have batch ${eb}, latents ${b}.`, 'Pass one text embedding per latent (CFG: [uncond; cond]).');
    if (ed !== cfg.cross_attention_dim) throw badInput(`encoder hidden states have width ${ed}, the UNet takes ${cfg.cross_attention_dim}.`);
    const ts = typeof timestep === 'number' ? [timestep] : [...timestep];
    if (ts.length !== 1 && ts.length !== b) throw badInput(`${ts.length} timesteps for a batch of ${b}.`, 'Pass one timestep, or one per batch item.');
    if (ts.some((t) => !Number.isFinite(t))) throw badInput(`timestep ${ts.join(', ')} is not a finite number.`);
    const tsTensor = Tensor.f32(Float32Array.from({ length: b }, (_, i) => ts[ts.length === 1 ? 0 : i]!), [b]);
    if (out && (out.dtype !== 'f32' || out.shape.length !== 4 || out.shape.some((d, i) => d !== [b, cfg.out_channels, h, w][i]))) {
      throw badInput(`output buffer has shape [${out.shape.join(', ')}], [${b}, ${cfg.out_channels}, ${h}, ${w}] is needed.`);
    }
    const feeds = { sample: latents, timestep: tsTensor, encoder_hidden_states: encoderHiddenStates };
    const result = out ? await this.session.run(feeds, { out_sample: out }) : await this.session.run(feeds, ['out_sample']);
    return result.out_sample!;
  }

  release(): Promise<void> {
    return this.session.release();
  }
}
