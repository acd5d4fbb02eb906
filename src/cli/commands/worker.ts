import { parseArgs } from 'node:util';
import { DEFAULT_QUEUE_NAME, startBullWorker } from '../../service/bullmq-queue.ts';
import { dataDirFrom } from '../../service/cli-support.ts';
import { loadComponents } from '../../service/components.ts';

export const summary = 'Run a BullMQ generation worker (scale-out for `serve --queue bullmq`)';

const help = `Usage: redline worker [options]

Takes generation jobs from Redis one at a time, with its own model on its own device.

  --redis URL          Redis (default redis://127.0.0.1:6379)
  --queue-name NAME    BullMQ queue (default ${DEFAULT_QUEUE_NAME})
  --components MODULE  module exporting createComponents (as for serve)
  --data-dir DIR       passed to the components (model cache, policy)
  --stalled-ms MS      how often jobs of dead workers are looked for (default 30000)
  --lock-ms MS         how long a job stays claimed by a silent worker (default 30000)`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      redis: { type: 'string', default: 'redis://127.0.0.1:6379' },
      'queue-name': { type: 'string', default: DEFAULT_QUEUE_NAME },
      components: { type: 'string' },
      'data-dir': { type: 'string' },
      'stalled-ms': { type: 'string', default: '30000' },
      'lock-ms': { type: 'string', default: '30000' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(help);
    return 0;
  }
  const components = await loadComponents(values.components, { dataDir: dataDirFrom(values['data-dir']), role: 'worker' });
  const worker = await startBullWorker({
    redisUrl: values.redis,
    queueName: values['queue-name'],
    components,
    stalledIntervalMs: Number(values['stalled-ms']),
    lockDurationMs: Number(values['lock-ms']),
    log: (msg, extra) => console.error(JSON.stringify({ time: Date.now(), pid: process.pid, msg, ...extra })),
  });
  console.error(`redline worker: ready (pid ${process.pid}, queue ${values['queue-name']})`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  await worker.close();
  await components.backend.close?.();
  return 0;
}
