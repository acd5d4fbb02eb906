import { parseArgs } from 'node:util';
import { FAMILY_NAMES } from '../../models/checkpoint/detect.ts';
import { listModels } from '../../models/checkpoint/registry.ts';
import { cleanText } from '../../adapters/text.ts';

export const summary = 'list checkpoints (single files and diffusers folders) with family, hash and size';

const HELP = `Usage: redline models [DIR] [--json] [--no-hash]

Lists the models under DIR (default: $REDLINE_MODEL_DIR or models/Stable-diffusion):
single-file .safetensors checkpoints and diffusers folders, with their family (only
Stable Diffusion 1.x loads), A1111's model hash (10 digits, as in infotext 'Model hash:')
and the sha256. Pickle files (.ckpt/.pt) are listed as unusable until converted.

  --json      machine-readable output
  --no-hash   skip hashing (hashes are cached by path, size and mtime)`;

function size(n: number): string {
  return n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(2)} GB` : `${(n / (1 << 20)).toFixed(1)} MB`;
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { json: { type: 'boolean' }, 'no-hash': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (positionals.length > 1) {
    console.error(`redline models: one folder at most.\n\n${HELP}`);
    return 2;
  }
  const dir = positionals[0] ?? process.env.REDLINE_MODEL_DIR ?? 'models/Stable-diffusion';
  const list = await listModels(dir, { hashes: !values['no-hash'] });
  if (values.json) {
    console.log(JSON.stringify(list, null, 2));
    return 0;
  }
  if (!list.length) {
    console.log(`No models in ${dir}.`);
    return 0;
  }
  for (const m of list) {
    const what = m.kind === 'checkpoint' ? (m.family === 'unknown' ? 'unknown model' : FAMILY_NAMES[m.family]) : m.kind === 'unknown' ? 'not a model' : m.kind;
    const cols = [cleanText(m.path, 200), m.format, what, size(m.size), m.hash ? `hash ${m.hash.short}` : null, m.usable ? null : 'NOT USABLE'].filter(Boolean);
    console.log(cols.join('  '));
    if (m.hash) console.log(`  sha256: ${m.hash.sha256}`);
    if (m.note) console.log(`  note: ${cleanText(m.note, 300)}`);
  }
  return 0;
}
