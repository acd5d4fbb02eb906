import { parseArgs } from 'node:util';
import { RedlineError } from '../../errors.ts';
import { dataDirFrom } from '../../service/cli-support.ts';
import { loadComponents } from '../../service/components.ts';
import { buildServer } from '../../service/server.ts';

export const summary = 'Run the HTTP API (native + A1111-compatible) and the job queue';

const help = `Usage: redline serve [options]

  --host H             address to listen on (default 127.0.0.1)
  --port P             port (default 7860, as A1111; 0 picks a free port)
  --data-dir DIR       accounts, keys, jobs and results (default $REDLINE_DATA_DIR or ./redline-data)
  --components MODULE  module exporting createComponents (generation backend, screener,
                       output checks); default: the built-in wiring in src/service/components.ts
  --queue KIND         embedded (SQLite, in-process worker; default) or bullmq
  --redis URL          Redis for --queue bullmq (default redis://127.0.0.1:6379)
  --allow-init-urls    accept img2img init images by URL (public hosts only; off by default)
  --cors-origin ORIGIN allow browser calls from ORIGIN (repeatable; CORS is closed by default)
  --log-level LEVEL    pino level: fatal, error, warn, info (default), debug, silent

Create the first admin key with: redline keys create --role admin --data-dir DIR`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '7860' },
      'data-dir': { type: 'string' },
      components: { type: 'string' },
      queue: { type: 'string', default: 'embedded' },
      redis: { type: 'string', default: 'redis://127.0.0.1:6379' },
      'allow-init-urls': { type: 'boolean', default: false },
      'cors-origin': { type: 'string', multiple: true, default: [] },
      'log-level': { type: 'string', default: 'info' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(help);
    return 0;
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RedlineError('bad_port', `--port '${values.port}' is not a port number.`);
  if (values.queue !== 'embedded' && values.queue !== 'bullmq') {
    throw new RedlineError('bad_queue', `--queue '${values.queue}' is not a queue kind.`, 'Use embedded or bullmq.');
  }
  const dataDir = dataDirFrom(values['data-dir']);
  const components = await loadComponents(values.components, { dataDir, role: 'server' });
  const server = await buildServer({
    dataDir,
    components,
    queue: values.queue === 'bullmq' ? { kind: 'bullmq', redisUrl: values.redis } : { kind: 'embedded' },
    logger: { level: values['log-level'], redact: ['req.headers.authorization', 'req.headers.cookie'] },
    allowInitImageUrls: values['allow-init-urls'],
    corsOrigins: values['cors-origin'],
  });
  const address = await server.app.listen({ host: values.host, port });
  console.error(`redline serve: listening on ${address} (data ${dataDir}, queue ${values.queue})`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await server.close();
  await components.backend.close?.();
  return 0;
}
