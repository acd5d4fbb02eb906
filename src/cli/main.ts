// Redline command line. Each subcommand is a module in ./commands/<name>.ts exporting
// `run(argv: string[]): Promise<number | void>` and `summary: string`; the dispatcher
// finds them by name, so adding a command touches no shared file.
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RedlineError } from '../errors.ts';

interface CommandModule {
  summary: string;
  run(argv: string[]): Promise<number | void>;
}

const commandsDir = join(dirname(fileURLToPath(import.meta.url)), 'commands');

function commandNames(): string[] {
  return readdirSync(commandsDir)
    .filter((f) => f.endsWith('.ts') && !f.startsWith('_'))
    .map((f) => f.slice(0, -3))
    .sort();
}

async function usage(): Promise<string> {
  const lines = ['Usage: redline <command> [options]', '', 'Commands:'];
  for (const name of commandNames()) {
    const mod = (await import(join(commandsDir, `${name}.ts`))) as CommandModule;
    lines.push(`  ${name.padEnd(12)} ${mod.summary}`);
  }
  lines.push('', 'Run `redline <command> --help` for the options of a command.');
  return lines.join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(await usage());
    return name ? 0 : 2;
  }
  const file = join(commandsDir, `${name}.ts`);
  if (!/^[a-z][a-z0-9-]*$/.test(name) || !existsSync(file)) {
    console.error(`redline: unknown command '${name}'. Commands: ${commandNames().join(', ')}`);
    return 2;
  }
  const mod = (await import(file)) as CommandModule;
  return (await mod.run(rest)) ?? 0;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  if (err instanceof RedlineError) {
    console.error(`redline: ${err.message}`);
    process.exitCode = 1;
  } else {
    throw err;
  }
}
