import { type AdapterListing, listAdapters } from '../../adapters/registry.ts';
import { cleanText } from '../../adapters/text.ts';
import { RedlineError } from '../../errors.ts';
import { FAMILY_NAMES } from '../../models/checkpoint/detect.ts';
import { assertAdapterGradable } from '../../safety/graded.ts';
import { formatSize, runFolderListing } from '../folder-listing.ts';

export const summary = 'list LoRA adapters in a folder with metadata and A1111 hashes';

const HELP = `Usage: redline loras [DIR] [--json] [--no-hash]

Lists the adapter files (.safetensors) under DIR (default: $REDLINE_LORA_DIR or models/Lora):
kind (LoRA, LoCon, LoHa, LoKr), base model family, rank and alpha (kohya ss_* metadata),
training resolution, the most frequent training tags, A1111's LoRA hash (the 12-digit hash
of 'Lora hashes:' in infotext), the sha256, and Redline's sidecar NAME.json
(category, intensity level -> strength). Metadata is shown sanitised: it is untrusted text.

An adapter marked REFUSED cannot be used by redline generate or the server: its sidecar is
unreadable, too large, not JSON or invalid, a graded adapter's calibration is incomplete,
or its metadata declares a category no sidecar matches. The exit status is 1 when any
adapter is refused.

  --json      machine-readable output (one JSON array)
  --no-hash   skip hashing (hashes are cached by path, size and mtime)`;

function render(a: AdapterListing): string {
  const m = a.meta;
  const head = [
    a.name,
    a.kind,
    a.family === 'unknown' ? 'family ?' : FAMILY_NAMES[a.family],
    m.rank !== undefined ? `rank ${m.rank}` : null,
    m.alpha !== undefined ? `alpha ${m.alpha}` : null,
    formatSize(a.size),
    a.hashes ? `hash ${a.hashes.a1111}` : null,
  ].filter(Boolean).join('  ');
  const lines = [head, `  file: ${cleanText(a.file, 300)}`];
  if (a.refusal) lines.push(`  REFUSED: ${cleanText(a.refusal.message, 400)}`, `  fix: ${cleanText(a.refusal.hint, 400)}`);
  if (m.title && m.title !== a.name) lines.push(`  title: ${m.title}`);
  if (m.baseModel || m.trainedOn) lines.push(`  base: ${[m.baseModel, m.trainedOn].filter(Boolean).join(', ')}`);
  if (m.resolution) lines.push(`  resolution: ${m.resolution}`);
  if (m.topTags.length) lines.push(`  tags: ${m.topTags.map((t) => `${t.tag} (${t.count})`).join(', ')}`);
  if (a.hashes) lines.push(`  sha256: ${a.hashes.sha256}`);
  if (a.sidecar) {
    if (a.sidecar.category) lines.push(`  category: ${a.sidecar.category}`);
    if (a.sidecar.intensity && Object.keys(a.sidecar.intensity).length) {
      lines.push(`  intensity: ${Object.entries(a.sidecar.intensity).map(([l, s]) => `${l}=${s}`).join(', ')}`);
    }
  }
  for (const w of a.warnings) if (w !== a.refusal?.message) lines.push(`  warning: ${cleanText(w, 300)}`);
  return lines.join('\n');
}

/** The registry's listing, with graded adapters whose calibration the safety layer would
 * refuse marked as refused too, so the listing says what generation will do. */
export async function listAdaptersForUse(dir: string, options: { hashes: boolean }): Promise<AdapterListing[]> {
  const list = await listAdapters(dir, options);
  for (const a of list) {
    if (a.refusal || !a.sidecar) continue;
    try {
      assertAdapterGradable(a.name, a.sidecar);
    } catch (err) {
      if (!(err instanceof RedlineError)) throw err;
      const hint = err.hint ?? '';
      const bare = hint && err.message.endsWith(` ${hint}`) ? err.message.slice(0, -hint.length - 1) : err.message;
      const message = bare.startsWith('Adapter "') ? bare : `Adapter "${a.name}" is refused: ${bare}`;
      a.refusal = { code: err.code, message, hint };
      a.warnings.push(message);
    }
  }
  return list;
}

export async function run(argv: string[]): Promise<number> {
  let refused: AdapterListing[] = [];
  const code = await runFolderListing(argv, {
    name: 'loras',
    help: HELP,
    envVar: 'REDLINE_LORA_DIR',
    defaultDir: 'models/Lora',
    list: async (dir, options) => {
      const list = await listAdaptersForUse(dir, options);
      refused = list.filter((a) => a.refusal);
      return list;
    },
    noneFound: (dir) => `No adapter files in ${dir}.`,
    render: (list) => list.map(render).join('\n\n'),
  });
  if (code === 0 && refused.length) {
    console.error(`redline loras: ${refused.length} adapter${refused.length === 1 ? ' is' : 's are'} refused (${refused.map((a) => cleanText(a.name, 60)).join(', ')}); see REFUSED above.`);
    return 1;
  }
  return code;
}
