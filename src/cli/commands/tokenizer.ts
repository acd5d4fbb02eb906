import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { RedlineError } from '../../errors.ts';
import { trainBpe, writeBpeVocabulary } from '../../text/bpe-trainer.ts';

export const summary = 'train a CLIP-format BPE tokenizer (vocab.json + merges.txt) on caption files';

const HELP = `Usage: redline tokenizer train --captions DIR|FILE --out DIR [--max-merges N] [--min-frequency N]

Reads every *.txt caption in DIR (or one caption per line of FILE) and writes vocab.json and
merges.txt (CLIP byte-level BPE, '</w>' word ends, <|startoftext|>/<|endoftext|> at 49406/49407).`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      captions: { type: 'string' },
      out: { type: 'string' },
      'max-merges': { type: 'string', default: '10000' },
      'min-frequency': { type: 'string', default: '2' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (positionals[0] !== 'train') throw new RedlineError('bad_option', `Unknown action "${positionals[0] ?? ''}".`, HELP);
  if (!values.captions || !values.out) throw new RedlineError('missing_option', '--captions and --out are required.', HELP);
  let captions: string[];
  try {
    const entries = readdirSync(values.captions).filter((f) => f.endsWith('.txt')).sort();
    captions = entries.map((f) => readFileSync(join(values.captions!, f), 'utf8').trim());
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOTDIR') throw new RedlineError('file_not_found', `Cannot read ${values.captions}: ${(err as Error).message}.`);
    captions = readFileSync(values.captions, 'utf8').split('\n').filter((l) => l.trim() !== '');
  }
  const v = trainBpe(captions, { maxMerges: Number(values['max-merges']), minFrequency: Number(values['min-frequency']) });
  writeBpeVocabulary(values.out, v);
  console.error(`learned ${v.merges.length} merges from ${captions.length} captions; wrote ${values.out}/vocab.json and merges.txt`);
  return 0;
}
