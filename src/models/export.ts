// ONNX model folder for deployment (the paper's compiled model): one ONNX model per
// component, built by the same graph builders Redline runs, with its weights copied into
// external data beside it (no links back into the checkpoint, so the folder can be moved),
// plus tokenizer and scheduler config and a manifest with each file's size and sha256 that
// a loader checks before use.
//
//   DIR/text_encoder/model.onnx (+ model.onnx.data)   input_ids -> last_hidden_state, pooled_output, clip_skip_N
//   DIR/unet/model.onnx + model.onnx.data               sample, timestep, encoder_hidden_states -> out_sample
//   DIR/vae_decoder/model.onnx (+ data)                 latent -> image
//   DIR/vae_encoder/model.onnx (+ data)                 image -> mean, logvar
//   DIR/tokenizer/ (vocab.json, merges.txt, ...)  DIR/scheduler/scheduler_config.json
//   DIR/redline_onnx.json                              manifest
import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { RedlineError } from '../errors.ts';
import type { Graph } from '../graph/graph.ts';
import { writeOnnx } from '../graph/onnx.ts';
import type { SD15Configs } from './checkpoint/configs.ts';
import { buildTextEncoder } from './text-encoder.ts';
import { buildUnet } from './unet.ts';
import { buildVaeDecoder, buildVaeEncoder } from './vae.ts';
import type { WeightSource } from './weights.ts';

export const ONNX_MANIFEST = 'redline_onnx.json';
const FORMAT = 'redline-onnx-folder';
const COMPONENTS = ['text_encoder', 'unet', 'vae_decoder', 'vae_encoder'] as const;
export type OnnxComponent = (typeof COMPONENTS)[number];

export interface OnnxFolderManifest {
  format: typeof FORMAT;
  version: 1;
  /** Relative model path per component. */
  models: Record<OnnxComponent, { path: string; inputs: string[]; outputs: string[] }>;
  configs: SD15Configs;
  /** Largest clip skip the text encoder outputs. */
  maxClipSkip: number;
  /** Every file of the folder but the manifest, relative path -> size and sha256. */
  files: Record<string, { bytes: number; sha256: string }>;
  /** Free-form provenance (base model, fused adapters and strengths). */
  metadata: Record<string, string>;
}

export interface OnnxFolderInput {
  configs: SD15Configs;
  components: { unet: WeightSource; text_encoder: WeightSource; vae: WeightSource };
  /** Folder with vocab.json + merges.txt (+ tokenizer_config.json, special_tokens_map.json). */
  tokenizerDir: string | null;
  metadata?: Record<string, string>;
}

export interface OnnxFolderOptions {
  overwrite?: boolean;
  onStatus?: (line: string) => void;
}

const TOKENIZER_FILES = ['vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json'];

export function writeOnnxFolder(dir: string, input: OnnxFolderInput, opts: OnnxFolderOptions = {}): OnnxFolderManifest {
  const status = opts.onStatus ?? (() => {});
  if (existsSync(dir) && readdirSync(dir).length && !opts.overwrite) {
    throw new RedlineError('output_exists', `${dir} already exists and is not empty.`, 'Choose another folder or pass --force.');
  }
  if (!input.tokenizerDir || !existsSync(join(input.tokenizerDir, 'vocab.json')) || !existsSync(join(input.tokenizerDir, 'merges.txt'))) {
    throw new RedlineError('tokenizer_missing', 'An ONNX model folder needs the tokenizer (vocab.json and merges.txt) and the base model carries none.', 'Pass --tokenizer DIR with the SD 1.5 tokenizer files.');
  }
  // Written beside the target and renamed at the end: a half-written folder never looks complete.
  const partial = `${dir}.partial-${process.pid}`;
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial, { recursive: true });
  try {
    const { configs, components } = input;
    const maxClipSkip = Math.min(configs.text_encoder.num_hidden_layers, 12);
    const graphs: Record<OnnxComponent, () => Graph> = {
      text_encoder: () => buildTextEncoder(configs.text_encoder, components.text_encoder, { maxClipSkip }),
      unet: () => buildUnet(configs.unet, components.unet),
      vae_decoder: () => buildVaeDecoder(configs.vae, components.vae),
      vae_encoder: () => buildVaeEncoder(configs.vae, components.vae),
    };
    const models = {} as OnnxFolderManifest['models'];
    for (const c of COMPONENTS) {
      status(`writing ${c}`);
      const g = graphs[c]();
      writeOnnx(g, join(partial, c), { linkSourceFiles: false, metadata: { 'redline.component': c } });
      models[c] = { path: `${c}/model.onnx`, inputs: g.inputs.map((v) => v.name), outputs: g.outputs.map((o) => o.name) };
    }
    mkdirSync(join(partial, 'tokenizer'));
    for (const f of TOKENIZER_FILES) {
      if (existsSync(join(input.tokenizerDir, f))) copyFileSync(join(input.tokenizerDir, f), join(partial, 'tokenizer', f));
    }
    mkdirSync(join(partial, 'scheduler'));
    writeFileSync(join(partial, 'scheduler', 'scheduler_config.json'), `${JSON.stringify(configs.scheduler, null, 2)}\n`);
    status('hashing');
    const files: OnnxFolderManifest['files'] = {};
    for (const f of listFiles(partial)) files[relative(partial, f)] = { bytes: statSync(f).size, sha256: sha256File(f) };
    const manifest: OnnxFolderManifest = { format: FORMAT, version: 1, models, configs, maxClipSkip, files, metadata: input.metadata ?? {} };
    writeFileSync(join(partial, ONNX_MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
    rmSync(dir, { recursive: true, force: true });
    renameSync(partial, dir);
    return manifest;
  } catch (err) {
    rmSync(partial, { recursive: true, force: true });
    throw err;
  }
}

export function isOnnxFolder(path: string): boolean {
  return existsSync(join(path, ONNX_MANIFEST));
}

export interface OnnxFolder {
  dir: string;
  manifest: OnnxFolderManifest;
  modelPath(c: OnnxComponent): string;
  tokenizerDir: string;
}

/** Reads and checks a folder written by writeOnnxFolder: every listed file present with its
 * size and (unless `verify: false`) its sha256; files the manifest does not list are refused
 * too, since ORT would read whatever lies beside a model. */
export function readOnnxFolder(dir: string, opts: { verify?: boolean } = {}): OnnxFolder {
  const path = join(dir, ONNX_MANIFEST);
  if (!existsSync(path)) throw new RedlineError('onnx_folder_invalid', `${dir} has no ${ONNX_MANIFEST}.`, 'Write the folder with `redline merge ... --onnx DIR`.');
  let manifest: OnnxFolderManifest;
  try {
    manifest = JSON.parse(readFileSync(path, 'utf8')) as OnnxFolderManifest;
  } catch (err) {
    throw new RedlineError('onnx_folder_invalid', `${path} is not valid JSON: ${(err as Error).message}.`);
  }
  if (manifest.format !== FORMAT || manifest.version !== 1) {
    throw new RedlineError('onnx_folder_invalid', `${path} is not a Redline ONNX folder manifest (format ${String(manifest.format)}, version ${String(manifest.version)}).`);
  }
  const listed = new Set(Object.keys(manifest.files));
  for (const f of listFiles(dir)) {
    const rel = relative(dir, f);
    if (rel !== ONNX_MANIFEST && !listed.has(rel)) throw new RedlineError('onnx_folder_modified', `${dir}: ${rel} is not listed in the manifest.`, 'Remove it, or export the folder again.');
  }
  for (const [rel, want] of Object.entries(manifest.files)) {
    const f = join(dir, rel);
    if (rel.split(/[\\/]/).includes('..')) throw new RedlineError('onnx_folder_invalid', `${path} lists a file outside the folder (${rel}).`);
    if (!existsSync(f)) throw new RedlineError('onnx_folder_modified', `${dir}: ${rel} is missing.`, 'Export the folder again.');
    const bytes = statSync(f).size;
    if (bytes !== want.bytes) throw new RedlineError('onnx_folder_modified', `${dir}: ${rel} has ${bytes} bytes, the manifest says ${want.bytes}.`, 'Export the folder again.');
    if (opts.verify !== false && sha256File(f) !== want.sha256) throw new RedlineError('onnx_folder_modified', `${dir}: ${rel} does not match its sha256 in the manifest.`, 'Export the folder again.');
  }
  for (const c of COMPONENTS) {
    if (!manifest.models?.[c] || !listed.has(manifest.models[c].path)) throw new RedlineError('onnx_folder_invalid', `${path} names no ${c} model.`);
  }
  return { dir, manifest, modelPath: (c) => join(dir, manifest.models[c].path), tokenizerDir: join(dir, 'tokenizer') };
}

function listFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...listFiles(p));
    else out.push(p);
  }
  return out.sort();
}

function sha256File(path: string): string {
  const h = createHash('sha256');
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.allocUnsafe(8 << 20);
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    closeSync(fd);
  }
  return h.digest('hex');
}
