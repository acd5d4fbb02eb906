// The GPU-buffer path on the webgpu provider. On this VM webgpu runs on Mesa lavapipe
// (software Vulkan, installed by scripts/system-deps.sh), which is enough to check that
// step-graph outputs stay device tensors ('gpu-buffer'), feed the next run without a copy,
// and come back once through HostReader with the CPU provider's values.
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { exportOnnx } from '../../src/graph/onnx.ts';
import { createStepSession, HostReader } from '../../src/runtime/device-loop/index.ts';
import { probeProvider, type Provider, toOrtTensor } from '../../src/runtime/session.ts';
import { SamplerGraphPlan } from '../../src/sampling/graphs/index.ts';
import { SafetensorsFile } from '../../src/tensor/safetensors.ts';
import { goldenJson, goldenPath } from '../helpers/golden.ts';

const shape = goldenJson<{ shape: number[] }>('schedulers', 'trajectories.json').shape;
const inputs = SafetensorsFile.open(goldenPath('schedulers', 'traj_inputs.safetensors'));
const xT = inputs.getFloat32('x_T_unit');
const F = inputs.getFloat32('F');
inputs.close();
const n = xT.length;

/** Runs `steps` step-graph updates chained on `provider` with fixed stacked predictions. */
async function chain(provider: Provider, sampler: string, steps: number) {
  const plan = new SamplerGraphPlan(sampler, { steps });
  const session = await createStepSession(exportOnnx(plan.graph(shape, 'stacked')), provider);
  const reader = new HostReader(provider);
  const locations = new Set<string>();
  let state: Record<string, ort.Tensor> = { latents: new ort.Tensor('float32', xT.map((v) => v * plan.sampler.initNoiseSigma), shape) };
  for (const [k, v] of Object.entries(plan.initialHistory(n))) state[k] = new ort.Tensor('float32', v, shape);
  for (let i = 0; i < plan.steps; i++) {
    const pred = Float32Array.from({ length: 2 * n }, (_, k) => F[k % n]! * (k < n ? 0.5 : 0.6) + 0.01 * i);
    const feeds: Record<string, ort.Tensor> = { ...state, noise_pred: new ort.Tensor('float32', pred, [2 * shape[0]!, ...shape.slice(1)]), cfg: new ort.Tensor('float32', Float32Array.of(7.5), [1]) };
    for (const [k, v] of Object.entries(plan.feeds(i, shape))) feeds[k] = toOrtTensor(v);
    const out = await session.run(feeds);
    for (const v of Object.values(out)) locations.add(v.location);
    const next: Record<string, ort.Tensor> = {};
    for (const [from, to] of Object.entries(plan.carry)) next[to] = out[from]!;
    state = next;
  }
  const latents = Float32Array.from(await reader.read(state.latents!));
  await reader.release();
  await session.release();
  return { latents, locations: [...locations], copies: reader.copies };
}

describe('device loop on webgpu (gpu-buffer outputs)', async () => {
  it('webgpu starts here (lavapipe or a GPU)', async () => {
    expect(await probeProvider('webgpu')).toBeNull();
  });

  it.each(['Euler', 'DPM++ 2M'])('%s: outputs stay on the device, one copy back, same latents as the CPU', async (sampler) => {
    const cpu = await chain('cpu', sampler, 8);
    const gpu = await chain('webgpu', sampler, 8);
    expect(cpu.locations).toEqual(['cpu']);
    expect(cpu.copies).toBe(0);
    expect(gpu.locations).toEqual(['gpu-buffer']);
    expect(gpu.copies).toBe(1);
    let scale = 1;
    let diff = 0;
    for (let k = 0; k < n; k++) {
      scale = Math.max(scale, Math.abs(cpu.latents[k]!));
      diff = Math.max(diff, Math.abs(cpu.latents[k]! - gpu.latents[k]!));
    }
    expect(diff / scale).toBeLessThan(1e-5);
  });
});
