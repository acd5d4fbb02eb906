import { parseArgs } from 'node:util';
import { RedlineError } from '../../errors.ts';
import { likenessSampleFromFile } from '../../safety/likeness/register.ts';
import { defaultDataDir, LikenessStore } from '../../safety/likeness/store.ts';
import { FaceAnalyzer } from '../../safety/output/faces.ts';

export const summary = 'register, list and remove protected persons whose likeness outputs may not show';

const USAGE = `Usage:
  redline likeness add NAME IMAGE...   register a person from photos (one face per photo)
  redline likeness list [--json]       list registered persons
  redline likeness remove NAME         forget a person

Options:
  --data-dir DIR   where likeness.json lives (default: $REDLINE_DATA_DIR or ~/.redline)
  --json           (list) print JSON
  -h, --help       show this help

Only face embeddings are stored, never the photos. Any generated or init image with a face
whose cosine similarity to a registered face reaches the policy threshold is blocked.`;

export async function run(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        'data-dir': { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    throw new RedlineError('bad_arguments', (err as Error).message, 'Run `redline likeness --help`.');
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const [action, ...rest] = positionals;
  const dataDir = values['data-dir'] ?? defaultDataDir();
  switch (action) {
    case 'add': {
      const [name, ...images] = rest;
      if (!name || images.length === 0) throw new RedlineError('bad_arguments', 'likeness add needs a NAME and at least one IMAGE.', 'Run `redline likeness --help`.');
      const store = LikenessStore.open(dataDir);
      const faces = await FaceAnalyzer.load();
      const samples = [];
      for (const file of images) samples.push(await likenessSampleFromFile(faces, file));
      const person = store.add(name, samples);
      console.log(`Protected ${person.name}: ${person.samples.length} face sample(s) in ${store.file}`);
      return 0;
    }
    case 'list': {
      if (rest.length > 0) throw new RedlineError('bad_arguments', `likeness list takes no arguments, got ${rest.join(' ')}.`);
      const people = LikenessStore.open(dataDir).list();
      if (values.json) {
        console.log(JSON.stringify(people.map((p) => ({ name: p.name, addedAt: p.addedAt, samples: p.samples.length }))));
      } else if (people.length === 0) {
        console.log('No protected persons registered.');
      } else {
        for (const p of people) console.log(`${p.name}\t${p.samples.length} sample(s)\tadded ${p.addedAt}`);
      }
      return 0;
    }
    case 'remove': {
      if (rest.length !== 1) throw new RedlineError('bad_arguments', 'likeness remove needs exactly one NAME.');
      const store = LikenessStore.open(dataDir);
      store.remove(rest[0]!);
      console.log(`Removed ${rest[0]} from ${store.file}`);
      return 0;
    }
    default:
      throw new RedlineError('bad_arguments', action ? `Unknown likeness action '${action}'.` : 'likeness needs an action.', 'Use add, list or remove (see --help).');
  }
}
