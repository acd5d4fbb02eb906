import { existsSync, readdirSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { gpuBufferApis } from '../../runtime/device-loop/index.ts';
import { probeProvider, type Provider, PROVIDERS } from '../../runtime/session.ts';

export const summary = 'show which execution providers (cpu, webgpu, cuda) can start here, and why not';

const HELP = `redline doctor [--json]

Starts a one-node model on every ONNX Runtime execution provider and reports which ones
work on this machine; for one that cannot start, ORT's reason and what to install.
  --json   print the report as JSON`;

const FIX: Record<Provider, string> = {
  cpu: 'Reinstall onnxruntime-node (npm install).',
  webgpu: 'WebGPU needs a GPU with a Vulkan driver; on headless Linux the Vulkan loader and libglvnd, and VK_DRIVER_FILES pointing at the GPU ICD (docs/gpu.md).',
  cuda: 'CUDA needs CUDA 12 + cuDNN 9 and onnxruntime-node installed with ONNXRUNTIME_NODE_INSTALL_CUDA=v12 (docs/gpu.md).',
};

export interface ProviderReport {
  provider: Provider;
  available: boolean;
  reason?: string;
  fix?: string;
  /** webgpu started without a GPU device: a software Vulkan driver (Mesa lavapipe). */
  note?: string;
}

/** GPU device nodes a hardware Vulkan/CUDA driver would use (NVIDIA, DRM render nodes). */
export function gpuDeviceNodes(): string[] {
  const nodes = existsSync('/dev/nvidia0') ? ['/dev/nvidia0'] : [];
  if (existsSync('/dev/dri')) nodes.push(...readdirSync('/dev/dri').filter((n) => n.startsWith('renderD')).map((n) => `/dev/dri/${n}`));
  return nodes;
}

export async function providerReport(): Promise<ProviderReport[]> {
  const out: ProviderReport[] = [];
  for (const provider of PROVIDERS) {
    const reason = await probeProvider(provider);
    if (reason !== null) {
      out.push({ provider, available: false, reason: reason.split('\n')[0]!.slice(0, 300), fix: FIX[provider] });
    } else if (provider === 'webgpu' && gpuDeviceNodes().length === 0) {
      // Vulkan found an adapter but the machine has no GPU device: Mesa's lavapipe. Right
      // for tests, as slow as the CPU provider or slower for generation.
      out.push({ provider, available: true, note: 'software Vulkan (no GPU device in /dev: Mesa lavapipe); correct results, CPU speed' });
    } else out.push({ provider, available: true });
  }
  return out;
}

/** Whether glibc's malloc was told to use transparent huge pages (bin/redline.js sets it). */
export function mallocHugePages(): boolean {
  return /(^|:)glibc\.malloc\.hugetlb=[12]/.test(process.env.GLIBC_TUNABLES ?? '');
}

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const report = await providerReport();
  if (values.json) {
    console.log(JSON.stringify({ onnxruntime: ort.env.versions.node, providers: report, gpuBufferApis: gpuBufferApis(), mallocHugePages: mallocHugePages() }, null, 2));
  } else {
    console.log(`onnxruntime-node ${ort.env.versions.node}`);
    console.log(`malloc huge pages: ${mallocHugePages() ? 'on' : 'off (start through bin/redline.js, or set GLIBC_TUNABLES=glibc.malloc.hugetlb=1)'}`);
    for (const r of report) {
      console.log(r.available ? `  ${r.provider.padEnd(7)} available${r.note ? ` (${r.note})` : ''}` : `  ${r.provider.padEnd(7)} unavailable: ${r.reason}\n          fix: ${r.fix}`);
    }
  }
  return report.some((r) => r.provider === 'cpu' && r.available) ? 0 : 1;
}
