// The shape shared by `redline loras` and `redline models`: list the files of one kind in a
// folder, as text or JSON, hashing them unless --no-hash.
import { parseArgs } from 'node:util';

export interface FolderListing<T> {
  /** The subcommand, for messages. */
  name: string;
  help: string;
  /** The folder when none is given: this environment variable, else `defaultDir`. */
  envVar: string;
  defaultDir: string;
  list(dir: string, options: { hashes: boolean }): Promise<T[]>;
  /** What to print when the folder holds nothing of the kind. */
  noneFound(dir: string): string;
  /** The human-readable listing of a non-empty folder. */
  render(items: T[]): string;
}

/** Runs `redline <name> [DIR] [--json] [--no-hash]`; returns the exit code. */
export async function runFolderListing<T>(argv: string[], listing: FolderListing<T>): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { json: { type: 'boolean' }, 'no-hash': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    console.log(listing.help);
    return 0;
  }
  if (positionals.length > 1) {
    console.error(`redline ${listing.name}: one folder at most (got ${positionals.length}).\n\n${listing.help}`);
    return 2;
  }
  const dir = positionals[0] ?? process.env[listing.envVar] ?? listing.defaultDir;
  const items = await listing.list(dir, { hashes: !values['no-hash'] });
  if (values.json) console.log(JSON.stringify(items, null, 2));
  else console.log(items.length ? listing.render(items) : listing.noneFound(dir));
  return 0;
}

/** File size for listings: GB, MB, or KB under a megabyte. */
export function formatSize(bytes: number): string {
  if (bytes >= 1 << 30) return `${(bytes / (1 << 30)).toFixed(2)} GB`;
  if (bytes >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(1)} MB`;
  return `${(bytes / 1024).toFixed(0)} KB`;
}
