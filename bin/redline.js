#!/usr/bin/env node
// Runs the TypeScript CLI through tsx so a checkout works without a build step.
//
// On Linux, glibc's malloc asks the kernel for transparent huge pages only when
// GLIBC_TUNABLES says so at process start (THP is 'madvise' on most distributions). With it,
// ONNX Runtime's large buffers (pre-packed UNet weights at load, activations on the first
// steps) take ~500x fewer page faults, at ~15 us each on a VM: the cached UNet loads in ~2 s
// instead of ~3-7 s (src/runtime/README.md). The variable cannot be set from inside, so the
// launcher runs the CLI once more with it set. REDLINE_NO_HUGEPAGES=1 skips this.
import { spawn } from 'node:child_process';
import { constants } from 'node:os';

const TUNABLE = 'glibc.malloc.hugetlb=1';
const tunables = process.env.GLIBC_TUNABLES ?? '';
const relaunch = process.platform === 'linux' && !process.env.REDLINE_NO_HUGEPAGES && !tunables.includes('glibc.malloc.hugetlb');

if (relaunch) {
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    // the IPC channel only tells the CLI when the launcher is gone (see below)
    stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, GLIBC_TUNABLES: tunables ? `${tunables}:${TUNABLE}` : TUNABLE, REDLINE_LAUNCHED: '1' },
  });
  // Ctrl-C reaches the child from the terminal's process group by itself; forwarding it too
  // would deliver it twice ('redline train' reads a second Ctrl-C as "quit now"). Service
  // managers signal the main PID: those signals are forwarded.
  process.on('SIGINT', () => {});
  for (const sig of ['SIGTERM', 'SIGHUP', 'SIGQUIT']) process.on(sig, () => child.kill(sig));
  child.on('error', (err) => {
    console.error(`redline: could not start: ${err.message}`);
    process.exit(1);
  });
  child.on('exit', (code, signal) => {
    if (signal) {
      process.removeAllListeners(signal);
      process.kill(process.pid, signal);
      process.exitCode = 128 + (constants.signals[signal] ?? 0);
    } else {
      process.exit(code ?? 1);
    }
  });
} else {
  if (process.env.REDLINE_LAUNCHED && process.channel) {
    delete process.env.REDLINE_LAUNCHED;
    // Exit with the launcher even when it is killed outright (SIGKILL cannot be forwarded;
    // noticed as soon as the event loop runs, which it does during generation and serving),
    // instead of running on as an orphan that holds a job, a port or a GPU.
    process.channel.unref();
    process.once('disconnect', () => process.kill(process.pid, 'SIGKILL'));
  }
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/main.ts');
}
