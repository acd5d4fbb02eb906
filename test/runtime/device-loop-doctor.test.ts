// `redline doctor` on a CPU-only machine: cpu starts; cuda does not (reason + what to
// install); webgpu either does not (reason) or starts on software Vulkan (Mesa lavapipe,
// installed by scripts/system-deps.sh) and says so. On a GPU machine set
// REDLINE_EXPECT_GPU=webgpu,cuda to name the providers that must start on hardware.
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { gpuDeviceNodes, providerReport } from '../../src/cli/commands/doctor.ts';
import { repoRoot } from '../helpers/golden.ts';

const expectGpu = new Set((process.env.REDLINE_EXPECT_GPU ?? '').split(',').filter(Boolean));

describe('redline doctor', () => {
  it('reports cpu available and each GPU provider with a reason when it cannot start', async () => {
    const report = await providerReport();
    expect(report.map((r) => r.provider)).toEqual(['cpu', 'webgpu', 'cuda']);
    expect(report[0]).toEqual({ provider: 'cpu', available: true });
    const hardware = gpuDeviceNodes().length > 0;
    for (const r of report.slice(1)) {
      if (expectGpu.has(r.provider)) expect(r, r.provider).toEqual({ provider: r.provider, available: true });
      else if (r.provider === 'cuda') expect(r.available).toBe(false);
      if (r.available && !hardware) expect(r.note, r.provider).toMatch(/software Vulkan/);
      if (!r.available) {
        expect(r.reason!.length, `${r.provider} reason`).toBeGreaterThan(10);
        expect(r.fix).toMatch(r.provider === 'cuda' ? /CUDA 12.*ONNXRUNTIME_NODE_INSTALL_CUDA/ : /Vulkan/);
      }
    }
  });

  it('prints the report from the CLI, JSON included', () => {
    const json = JSON.parse(execFileSync('node', ['bin/redline.js', 'doctor', '--json'], { cwd: repoRoot, encoding: 'utf8' })) as { providers: { provider: string; available: boolean }[] };
    expect(json.providers.find((p) => p.provider === 'cpu')!.available).toBe(true);
    const text = execFileSync('node', ['bin/redline.js', 'doctor'], { cwd: repoRoot, encoding: 'utf8' });
    expect(text).toMatch(/cpu\s+available/);
    if (!expectGpu.has('cuda')) expect(text).toMatch(/cuda\s+unavailable: .+\n\s+fix: /);
  });
});
