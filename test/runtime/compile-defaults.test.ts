import { afterEach, describe, expect, it, vi } from 'vitest';
import { Graph } from '../../src/graph/graph.ts';
import * as op from '../../src/graph/ops.ts';
import { openCheckpoint } from '../../src/models/checkpoint/load.ts';
import { buildVaeDecoder, buildVaeEncoder } from '../../src/models/vae.ts';
import { compileGraph, setGraphSessionDefaults } from '../../src/runtime/compile.ts';
import { Session } from '../../src/runtime/session.ts';
import { goldenPath } from '../helpers/golden.ts';

afterEach(() => vi.restoreAllMocks());

function identity(name: string): Graph {
  const g = new Graph(name);
  g.output('y', op.identity(g.input('x', 'f32', [1])));
  return g;
}

/** The options compileGraph hands to Session.create for `g`. */
async function sessionOptionsFor(g: Graph, opts: Parameters<typeof compileGraph>[1] = {}): Promise<unknown> {
  const create = vi.spyOn(Session, 'create');
  try {
    const s = await compileGraph(g, opts);
    await s.release();
    expect(create).toHaveBeenCalledTimes(1);
    return create.mock.calls[0]![1];
  } finally {
    create.mockRestore();
  }
}

describe('per-graph session defaults', () => {
  it('apply unless the caller sets the option', async () => {
    const g = identity('with_defaults');
    setGraphSessionDefaults(g, { memPattern: false });
    expect(await sessionOptionsFor(g, { threads: 1 })).toMatchObject({ memPattern: false, threads: 1 });
    expect(await sessionOptionsFor(g, { memPattern: true })).toMatchObject({ memPattern: true });
    expect(await sessionOptionsFor(g, { memPattern: undefined })).toMatchObject({ memPattern: false });
    expect(await sessionOptionsFor(identity('plain'))).not.toHaveProperty('memPattern');
  });

  it('the VAE decoder runs without ORT\u2019s memory pattern; the encoder keeps the default', async () => {
    const ckpt = openCheckpoint(goldenPath('models', 'diffusers'));
    expect(await sessionOptionsFor(buildVaeDecoder(ckpt.configs.vae, ckpt.components.vae))).toMatchObject({ memPattern: false });
    expect(await sessionOptionsFor(buildVaeEncoder(ckpt.configs.vae, ckpt.components.vae))).not.toHaveProperty('memPattern');
  });
});
