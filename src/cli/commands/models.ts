import { FAMILY_NAMES } from '../../models/checkpoint/detect.ts';
import { listModels, type ModelListing } from '../../models/checkpoint/registry.ts';
import { cleanText } from '../../adapters/text.ts';
import { formatSize, runFolderListing } from '../folder-listing.ts';

export const summary = 'list checkpoints (single files and diffusers folders) with family, hash and size';

const HELP = `Usage: redline models [DIR] [--json] [--no-hash]

Lists the models under DIR (default: $REDLINE_MODEL_DIR or models/Stable-diffusion):
single-file .safetensors checkpoints and diffusers folders, with their family (only
Stable Diffusion 1.x loads), A1111's model hash (10 digits, as in infotext 'Model hash:')
and the sha256. Pickle files (.ckpt/.pt) are listed as unusable until converted.

  --json      machine-readable output
  --no-hash   skip hashing (hashes are cached by path, size and mtime)`;

function render(m: ModelListing): string {
  const what = m.kind === 'checkpoint' ? (m.family === 'unknown' ? 'unknown model' : FAMILY_NAMES[m.family]) : m.kind === 'unknown' ? 'not a model' : m.kind;
  const cols = [cleanText(m.path, 200), m.format, what, formatSize(m.size), m.hash ? `hash ${m.hash.short}` : null, m.usable ? null : 'NOT USABLE'].filter(Boolean);
  const lines = [cols.join('  ')];
  if (m.hash) lines.push(`  sha256: ${m.hash.sha256}`);
  if (m.note) lines.push(`  note: ${cleanText(m.note, 300)}`);
  return lines.join('\n');
}

export function run(argv: string[]): Promise<number> {
  return runFolderListing(argv, {
    name: 'models',
    help: HELP,
    envVar: 'REDLINE_MODEL_DIR',
    defaultDir: 'models/Stable-diffusion',
    list: listModels,
    noneFound: (dir) => `No models in ${dir}.`,
    render: (list) => list.map(render).join('\n'),
  });
}
