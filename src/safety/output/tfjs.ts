// TensorFlow.js on its WebAssembly backend, loaded entirely from files inside node_modules.
// tfjs-node is avoided on purpose: its install step downloads a native binary.
// Everything is loaded with require() so that nsfwjs, @vladmandic/human and this module
// share the one CommonJS instance of @tensorflow/tfjs-core (one engine, one backend).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { RedlineError } from '../../errors.ts';
import type { RgbImage } from './image.ts';

const require = createRequire(import.meta.url);

export type Tf = typeof import('@tensorflow/tfjs-core');
type WasmBackend = typeof import('@tensorflow/tfjs-backend-wasm');
type ModelArtifacts = import('@tensorflow/tfjs-core').io.ModelArtifacts;

/** Folder holding tfjs-backend-wasm's .wasm binaries, with the trailing slash emscripten expects. */
export function wasmBinaryDir(): string {
  return dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm')) + '/';
}

/**
 * Reads a tfjs graph/layers model (model.json + weight shards) from disk. tfjs-core only
 * knows http(s) and browser storage; without this handler a `file://` URL would go to
 * fetch() and fail, and @vladmandic/human logs such failures instead of throwing.
 */
function fileModelHandler(file: string): import('@tensorflow/tfjs-core').io.IOHandler {
  return {
    load: async (): Promise<ModelArtifacts> => {
      let json: {
        modelTopology: object;
        format?: string;
        generatedBy?: string;
        convertedBy?: string;
        signature?: object;
        userDefinedMetadata?: ModelArtifacts['userDefinedMetadata'];
        weightsManifest: { paths: string[]; weights: ModelArtifacts['weightSpecs'] }[];
      };
      try {
        json = JSON.parse(readFileSync(file, 'utf8'));
      } catch (err) {
        throw new RedlineError('safety_model_missing', `Cannot read safety model ${file}: ${(err as Error).message}.`, 'Reinstall the npm dependencies (npm install).');
      }
      const specs: NonNullable<ModelArtifacts['weightSpecs']> = [];
      const shards: Buffer[] = [];
      for (const group of json.weightsManifest) {
        specs.push(...(group.weights ?? []));
        for (const shard of group.paths) shards.push(readFileSync(join(dirname(file), shard)));
      }
      const weights = Buffer.concat(shards);
      return {
        modelTopology: json.modelTopology,
        format: json.format,
        generatedBy: json.generatedBy,
        convertedBy: json.convertedBy,
        // The signature names the outputs to return; faceres' embedding is an inner node
        // that is only returned when the signature is passed through.
        signature: json.signature,
        userDefinedMetadata: json.userDefinedMetadata,
        weightSpecs: specs,
        weightData: weights.buffer.slice(weights.byteOffset, weights.byteOffset + weights.byteLength),
      };
    },
  };
}

let ready: Promise<Tf> | undefined;

/** tfjs-core with the wasm backend active and `file://` model URLs served from disk. */
export function loadTf(): Promise<Tf> {
  ready ??= (async () => {
    const tf = require('@tensorflow/tfjs-core') as Tf;
    const wasm = require('@tensorflow/tfjs-backend-wasm') as WasmBackend;
    // tfjs' router type says IOHandler, but its registry documents null as "not mine".
    tf.io.registerLoadRouter(((url: string | string[]) =>
      typeof url === 'string' && url.startsWith('file://') ? fileModelHandler(url.slice('file://'.length)) : null) as never);
    wasm.setWasmPaths(wasmBinaryDir());
    if (!(await tf.setBackend('wasm'))) {
      throw new RedlineError('safety_backend_failed', 'The TensorFlow.js wasm backend failed to start; output safety checks cannot run.', `Check that ${wasmBinaryDir()} holds the .wasm files.`);
    }
    await tf.ready();
    return tf;
  })();
  return ready;
}

/**
 * Uploads an image once as the int32 [H, W, 3] 0..255 tensor the nsfw and face models
 * read, runs `fn` on it, and frees it whatever `fn` does.
 */
export async function withPixelTensor<T>(tf: Tf, image: RgbImage, fn: (pixels: import('@tensorflow/tfjs-core').Tensor3D) => Promise<T>): Promise<T> {
  const pixels = tf.tensor3d(image.data, [image.height, image.width, 3], 'int32');
  try {
    return await fn(pixels);
  } finally {
    pixels.dispose();
  }
}

export { require as tfRequire };
