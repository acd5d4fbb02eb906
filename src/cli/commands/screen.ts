import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { RedlineError } from '../../errors.ts';
import { loadPolicy, roleOf } from '../../safety/policy/policy.ts';
import { readPromptTable } from '../../safety/screen/prompt-table.ts';
import { Screener } from '../../safety/screen/screener.ts';

export const summary = 'screen prompts against the content policy (one JSON result per line)';

const HELP = `Usage: redline screen [--policy FILE] [--role NAME] [--column NAME] [--tsv] [FILE|-]

Screens prompts, one per line (or a CSV/TSV column with --column), from FILE or standard
input, and prints one JSON object per prompt:
  {"row", "verdict": "allow"|"clamp"|"refuse", "categories", "intensity", "effective_intensity",
   "reason", "evidence"}
then a summary on standard error. Exit status 0 (the verdicts are data, not errors).

--policy FILE   policy YAML/JSON (default: the built-in default policy)
--role NAME     role whose caps apply (default: creator)
--column NAME   read CSV (or TSV) with a header row and screen this column
--tsv           the input is tab-separated (also detected from the header)`;

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      policy: { type: 'string' },
      role: { type: 'string', default: 'creator' },
      column: { type: 'string' },
      tsv: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (positionals.length > 1) throw new RedlineError('bad_args', 'screen takes one input file (or - for standard input).');
  const policy = loadPolicy(values.policy);
  const role = values.role!;
  roleOf(policy, role);
  const source = positionals[0] ?? '-';
  let text: string;
  try {
    text = readFileSync(source === '-' ? 0 : source, 'utf8');
  } catch (err) {
    throw new RedlineError('input_unreadable', `Cannot read ${source === '-' ? 'standard input' : source}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}.`);
  }
  const rows = readPromptTable(text, { column: values.column, tsv: values.tsv, source: source === '-' ? 'standard input' : source });
  const screener = new Screener(policy);
  const counts = { allow: 0, clamp: 0, refuse: 0 };
  const perCategory = new Map<string, number>();
  const out: string[] = [];
  const flush = () => {
    if (out.length) process.stdout.write(out.join(''));
    out.length = 0;
  };
  for (const { row, prompt } of rows) {
    const r = screener.screen({ prompt }, role);
    counts[r.verdict]++;
    for (const c of r.categories) perCategory.set(c.category, (perCategory.get(c.category) ?? 0) + 1);
    out.push(`${JSON.stringify({
      row,
      verdict: r.verdict,
      categories: r.categories.map((c) => c.category),
      intensity: r.intensity,
      effective_intensity: r.effectiveIntensity,
      reason: r.reason,
      persons: r.persons.length ? r.persons : undefined,
      evidence: r.categories.flatMap((c) => c.evidence.map((e) => ({ category: c.category, field: e.field, start: e.start, end: e.end, text: e.text, signal: e.signal }))),
    })}\n`);
    if (out.length >= 256) flush();
  }
  flush();
  const total = rows.length;
  const pct = (n: number) => (total ? `${((100 * n) / total).toFixed(1)}%` : '0%');
  console.error(`screened ${total} prompts as role '${role}' (policy ${policy.source}): allow ${counts.allow} (${pct(counts.allow)}), clamp ${counts.clamp} (${pct(counts.clamp)}), refuse ${counts.refuse} (${pct(counts.refuse)})`);
  if (perCategory.size) {
    console.error(`categories: ${[...perCategory].sort((a, b) => b[1] - a[1]).map(([c, n]) => `${c} ${n}`).join(', ')}`);
  }
  return 0;
}
