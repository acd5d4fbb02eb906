// Graph -> running session. Small graphs go to ORT as bytes; big ones are written as a model
// file plus external data (weights linked from their checkpoint where possible) and the
// session is created from the path, so ORT maps the weights instead of copying them.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Graph } from '../graph/graph.ts';
import { exportOnnx, writeOnnx, type OnnxExportOptions } from '../graph/onnx.ts';
import { BYTES_PER_ELEMENT } from '../tensor/dtype.ts';
import { Session, type SessionOptions } from './session.ts';

export interface CompileOptions extends SessionOptions, OnnxExportOptions {
  /** Graphs with more weight bytes than this go through a model file (default 256 MiB). */
  inMemoryLimit?: number;
  /** Folder for the model file; default a temporary folder removed once the session exists
   * (the mapped weights stay valid after unlinking). */
  workDir?: string;
}

export function weightBytes(g: Graph): number {
  let n = 0;
  for (const i of g.initializers) {
    const shape = i.value.shape as number[];
    n += shape.reduce((a, b) => a * b, 1) * BYTES_PER_ELEMENT[i.value.dtype];
  }
  return n;
}

export async function compileGraph(g: Graph, opts: CompileOptions = {}): Promise<Session> {
  if (weightBytes(g) <= (opts.inMemoryLimit ?? 256 * 2 ** 20)) return Session.create(exportOnnx(g, opts), opts);
  const dir = opts.workDir ?? mkdtempSync(join(tmpdir(), `redline-${g.name}-`));
  try {
    const { modelPath } = writeOnnx(g, dir, opts);
    return await Session.create(modelPath, opts);
  } finally {
    if (!opts.workDir) rmSync(dir, { recursive: true, force: true });
  }
}
