// The step graphs, run by ORT on the CPU provider, against the JS samplers step for step
// over the golden trajectory runs (inputs, toy model and noise from the golden files).
import { describe, expect, it } from 'vitest';
import { compileGraph } from '../../src/runtime/compile.ts';
import { SamplerGraphPlan } from '../../src/sampling/graphs/index.ts';
import { buildStepGraph } from '../../src/sampling/graphs/step-graphs.ts';
import { create, resolveSamplerName } from '../../src/sampling/index.ts';
import type { NoiseSource } from '../../src/sampling/sampler.ts';
import { SafetensorsFile } from '../../src/tensor/safetensors.ts';
import { Tensor } from '../../src/tensor/tensor.ts';
import { goldenJson, goldenPath } from '../helpers/golden.ts';

interface Trajectories { shape: number[]; trajectories: Record<string, { steps: number }> }
const golden = goldenJson<Trajectories>('schedulers', 'trajectories.json');
const GRAPH_SAMPLERS = new Set(['Euler', 'Euler a', 'DDIM', 'DPM++ 2M', 'DPM++ 2M Karras']);
const cases = Object.entries(golden.trajectories)
  .map(([key, e]) => ({ key, name: resolveSamplerName(key.replace(/_\d+$/, '')), steps: e.steps }))
  .filter((c) => GRAPH_SAMPLERS.has(c.name));

class RecordedNoise implements NoiseSource {
  draws = 0;
  constructor(private readonly noise: Float32Array, private readonly per: number) {}
  fill(out: Float32Array): void {
    out.set(this.noise.subarray(this.draws * this.per, (this.draws + 1) * this.per));
    this.draws++;
  }
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Max difference relative to the reference's scale (at least 1): latents reach |x| ~ 15
 * at high sigma, where one f32 ulp is 1e-6 and CFG 7.5 multiplies the rounding of c - u. */
function scaledDiff(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  let scale = 1;
  for (let i = 0; i < ref.length; i++) scale = Math.max(scale, Math.abs(ref[i]!));
  return maxAbsDiff(a, ref) / scale;
}

const inputs = SafetensorsFile.open(goldenPath('schedulers', 'traj_inputs.safetensors'));
const xT = inputs.getFloat32('x_T_unit');
const F = inputs.getFloat32('F');
inputs.close();
const shape = golden.shape;
const n = xT.length;
/** The toy model of trajectories.json; `bias` moves it to make a second (cond) prediction. */
function toyEps(xin: Float32Array, t: number, bias: number): Float32Array {
  const tScale = Math.fround(0.5 + t / 1000);
  return xin.map((v, k) => 0.8 * v + 0.2 * F[k]! * tScale + bias * F[(k * 7) % n]!);
}

it('the golden set has a trajectory for every graph sampler', () => {
  expect(new Set(cases.map((c) => c.name))).toEqual(GRAPH_SAMPLERS);
});

describe.each(cases)('step graph $key', ({ key, name, steps }) => {
  const recorded = () => {
    const file = SafetensorsFile.open(goldenPath('schedulers', `traj_${key}.safetensors`));
    const noise = file.has('noise') ? file.getFloat32('noise') : null;
    const latents = file.getFloat32('latents');
    file.close();
    return { noise, latents };
  };

  it.each(['none', 'separate', 'stacked'] as const)('guidance %s: equals the JS sampler at every step (1e-5 of the latent scale)', async (guidance) => {
    const { noise, latents } = recorded();
    const cfg = guidance === 'none' ? 1 : 7.5;
    const js = create(name, { steps });
    const plan = new SamplerGraphPlan(name, { steps });
    expect(plan.steps).toBe(js.timesteps.length);
    const session = await compileGraph(plan.graph(shape, guidance), { provider: 'cpu', threads: 1 });
    const jsNoise = noise ? new RecordedNoise(noise, n) : undefined;
    const graphNoise = noise ? new RecordedNoise(noise, n) : undefined;
    const x = xT.map((v) => v * js.initNoiseSigma);
    let state: Record<string, Tensor> = { latents: new Tensor('f32', shape, Float32Array.from(x)) };
    for (const [k, v] of Object.entries(plan.initialHistory(n))) state[k] = new Tensor('f32', shape, v);
    let graphInput = plan.initialModelInput(Float32Array.from(x));
    const eps = new Float32Array(n);
    for (let i = 0; i < js.timesteps.length; i++) {
      const t = js.timesteps[i]!;
      const xin = js.scaleModelInput(x, i);
      expect(scaledDiff(graphInput.subarray(0, n), xin), `model input ${i}`).toBeLessThan(1e-5);
      const u = toyEps(xin, t, 0);
      const c = toyEps(xin, t, guidance === 'none' ? 0 : 0.3);
      for (let k = 0; k < n; k++) eps[k] = u[k]! + cfg * (c[k]! - u[k]!);
      js.step(eps, i, x, jsNoise);
      // The graph gets predictions made from its own model input, as in the device loop.
      const gu = toyEps(graphInput.subarray(0, n), t, 0);
      const gc = toyEps(graphInput.subarray(0, n), t, guidance === 'none' ? 0 : 0.3);
      const pred: Record<string, Tensor> = guidance === 'none'
        ? { eps: new Tensor('f32', shape, gu) }
        : guidance === 'separate'
          ? { uncond: new Tensor('f32', shape, gu), cond: new Tensor('f32', shape, gc), cfg: new Tensor('f32', [1], Float32Array.of(cfg)) }
          : { noise_pred: new Tensor('f32', [2 * shape[0]!, ...shape.slice(1)], Float32Array.of(...gu, ...gc)), cfg: new Tensor('f32', [1], Float32Array.of(cfg)) };
      const out = await session.run({ ...state, ...pred, ...plan.feeds(i, shape, graphNoise) });
      expect(scaledDiff(out.latents_next!.toFloat32(), x), `latents after step ${i}`).toBeLessThan(1e-5);
      expect(scaledDiff(out.x0!.toFloat32(), js.predOriginalSample!), `x0 step ${i}`).toBeLessThan(1e-5);
      if (guidance === 'none') {
        expect(maxAbsDiff(out.latents_next!.toFloat32(), latents.subarray((i + 1) * n, (i + 2) * n)), `golden latents ${i}`).toBeLessThan(1e-4);
      }
      const next: Record<string, Tensor> = {};
      for (const [from, to] of Object.entries(plan.carry)) next[to] = out[from]!;
      state = next;
      graphInput = out.model_input!.toFloat32();
      expect(graphInput.length).toBe(guidance === 'none' ? n : 2 * n);
    }
    if (jsNoise) expect(graphNoise!.draws).toBe(jsNoise.draws);
    await session.release();
  });
});

describe('step graph errors', () => {
  it('refuses a sampler without a step graph, naming the ones that have one', () => {
    expect(() => new SamplerGraphPlan('LMS', { steps: 4 })).toThrow(/no step graph.*Euler, Euler a, DDIM/s);
  });
  it('refuses a latent shape that is not [B, 4, h, w]', () => {
    expect(() => buildStepGraph('euler', { latentShape: [4, 8, 8], guidance: 'none' })).toThrow(/\[B, 4, h, w\]/);
  });
});
