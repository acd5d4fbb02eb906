import { parseArgs } from 'node:util';
import { RedlineError } from '../../errors.ts';
import { writeSceneDataset } from '../../train/procedural/dataset.ts';

export const summary = 'write a procedural scene dataset (images + captions) for training and demos';

const HELP = `Usage: redline scenes --out DIR [--count N] [--seed S] [--size PX] [--splatter 0-3|graded] [--intensity-tags]

Writes NAME.png + NAME.txt (kohya caption convention) of procedurally drawn scenes:
coloured shapes on textured backgrounds, optionally with graded red paint splatter.`;

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      out: { type: 'string' },
      count: { type: 'string', default: '100' },
      seed: { type: 'string', default: '0' },
      size: { type: 'string', default: '128' },
      splatter: { type: 'string', default: '0' },
      'intensity-tags': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (!values.out) throw new RedlineError('missing_option', '--out DIR is required.', HELP);
  const count = Number(values.count);
  const size = Number(values.size);
  if (!Number.isInteger(count) || count < 1) throw new RedlineError('bad_option', `--count must be a positive integer, got "${values.count}".`);
  if (!Number.isInteger(size) || size < 32 || size % 8 !== 0) throw new RedlineError('bad_option', `--size must be a multiple of 8, at least 32, got "${values.size}".`);
  const splatter = values.splatter === 'graded' ? 'graded' : Number(values.splatter);
  if (splatter !== 'graded' && ![0, 1, 2, 3].includes(splatter)) {
    throw new RedlineError('bad_option', `--splatter must be 0, 1, 2, 3 or graded, got "${values.splatter}".`);
  }
  await writeSceneDataset(values.out, {
    count,
    seed: Number(values.seed),
    size,
    splatter: splatter as 0 | 1 | 2 | 3 | 'graded',
    intensityTags: values['intensity-tags'],
    onProgress: (done, total) => {
      if (process.stderr.isTTY) process.stderr.write(`\rscenes ${done}/${total}`);
    },
  });
  if (process.stderr.isTTY) process.stderr.write('\n');
  console.error(`wrote ${count} scenes to ${values.out}`);
  return 0;
}
