// `npm run bench:gpu`: Redline on a GPU provider next to the PyTorch reference
// (bench/gpu/torch_reference.py, same architecture, fp16, SDPA) on the same card, as ratios.
//
//   npm run bench:gpu -- [--device webgpu|cuda] [--steps 20] [--size 512]
//
// Exits 2 with a message on a machine without a GPU (or where the provider cannot start).
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { gpuDeviceNodes } from '../../src/cli/commands/doctor.ts';
import { probeProvider, type Provider } from '../../src/runtime/session.ts';

const { values } = parseArgs({ options: { device: { type: 'string', default: 'webgpu' }, steps: { type: 'string', default: '20' }, size: { type: 'string', default: '512' } } });
const device = values.device as Provider;

function stop(message: string): never {
  console.error(`bench:gpu: ${message}`);
  process.exit(2);
}

if (device !== 'webgpu' && device !== 'cuda') stop(`--device must be webgpu or cuda, got ${device}.`);
const nodes = gpuDeviceNodes();
if (nodes.length === 0) stop('no GPU on this machine (no /dev/nvidia0 or /dev/dri/renderD*). Run it on the GPU machine; `redline doctor` shows what can start here.');
const why = await probeProvider(device);
if (why) stop(`the ${device} provider cannot start: ${why.split('\n')[0]} (docs/gpu.md: Vulkan loader / CUDA 12 setup).`);

const torch = spawnSync('python3', ['bench/gpu/torch_reference.py', '--steps', values.steps!, '--size', values.size!], { encoding: 'utf8' });
if (torch.status !== 0) stop(`the PyTorch reference failed (exit ${torch.status}): ${torch.stderr.trim().split('\n').slice(-3).join(' | ')}`);
const ref = JSON.parse(torch.stdout.trim().split('\n').pop()!) as { device: string; unet_step_ms: number; generation_ms: number };

// Redline's side: the UNet step (bench/unet.ts with the provider) and a full generation
// through the device loop. Both need the provider/preferredOutputLocation plumbing listed in
// docs/gpu.md ("integration points"); until then they are reported as not measured rather
// than guessed.
const redline: Record<string, number | null> = { unet_step_ms: null, generation_ms: null, lora_train_step_ms: null };
const rows: [string, number | null, number | null][] = [
  ['UNet step (batch 2, fp16)', redline.unet_step_ms!, ref.unet_step_ms],
  [`${values.size}x${values.size} ${values.steps}-step generation`, redline.generation_ms!, ref.generation_ms],
  ['LoRA training step', redline.lora_train_step_ms!, null],
];
console.log(`card: ${ref.device} (GPU nodes: ${nodes.join(', ')}), provider ${device}`);
console.log('what                              redline ms   pytorch ms   ratio');
for (const [what, r, p] of rows) {
  const ratio = r !== null && p !== null ? (r / p).toFixed(2) : 'n/a';
  console.log(`${what.padEnd(34)}${(r === null ? 'not measured' : r.toFixed(1)).padStart(12)}${(p === null ? 'n/a' : p.toFixed(1)).padStart(13)}   ${ratio}`);
}
