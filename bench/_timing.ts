// Repeated timing for the benchmarks: wall time and this process's CPU time per run. CPU
// time is what the latency would be on an idle core (the safety models run on one thread);
// wall time also counts waiting for other processes on a shared machine.

export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** One untimed run (the first run of a shape compiles kernels), then `iterations` timed runs. */
export async function timeRuns(fn: () => Promise<unknown> | unknown, iterations: number): Promise<{ wallMs: number[]; cpuMs: number[] }> {
  await fn();
  const wallMs: number[] = [];
  const cpuMs: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const c0 = process.cpuUsage();
    const t = performance.now();
    await fn();
    wallMs.push(performance.now() - t);
    const c = process.cpuUsage(c0);
    cpuMs.push((c.user + c.system) / 1000);
  }
  return { wallMs, cpuMs };
}

/** `cpu median … ms  wall median … ms  wall min … ms` of timeRuns' result. */
export function formatTimes(t: { wallMs: number[]; cpuMs: number[] }): string {
  const ms = (v: number) => v.toFixed(1).padStart(6);
  return `cpu median ${ms(median(t.cpuMs))} ms  wall median ${ms(median(t.wallMs))} ms  wall min ${ms(Math.min(...t.wallMs))} ms`;
}
