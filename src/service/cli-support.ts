import { resolve } from 'node:path';

/** Data directory from --data-dir, else $REDLINE_DATA_DIR, else ./redline-data. */
export function dataDirFrom(flag: string | undefined): string {
  return resolve(flag ?? process.env.REDLINE_DATA_DIR ?? 'redline-data');
}

export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
