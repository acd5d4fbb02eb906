import { readFileSync } from 'node:fs';

export const summary = 'print the Redline version';

export async function run(): Promise<number> {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  console.log(`redline ${pkg.version}`);
  return 0;
}
