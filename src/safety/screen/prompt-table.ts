// Reads prompt lists for batch screening: plain text (one prompt per line) or CSV/TSV with a
// header row and a named column. CSV follows RFC 4180 (quoted fields, doubled quotes,
// newlines inside quotes).
import { RedlineError } from '../../errors.ts';

export interface PromptRow {
  /** 1-based line (plain text) or record number (CSV/TSV, header excluded). */
  row: number;
  prompt: string;
}

/** Parses delimiter-separated text into records. */
export function parseDelimited(text: string, delimiter: ',' | '\t'): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let inQuotes = false;
  let i = 0;
  if (text.charCodeAt(0) === 0xfeff) i = 1;
  for (; i < text.length; i++) {
    const ch = text[i]!;
    if (inQuotes) {
      if (ch === '"') {
        if (text[i + 1] === '"') {
          field += '"';
          i++;
        } else {
          inQuotes = false;
        }
      } else {
        field += ch;
      }
      continue;
    }
    if (ch === '"' && field === '') {
      inQuotes = true;
    } else if (ch === delimiter) {
      row.push(field);
      field = '';
    } else if (ch === '\n' || ch === '\r') {
      if (ch === '\r' && text[i + 1] === '\n') i++;
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else {
      field += ch;
    }
  }
  if (inQuotes) throw new RedlineError('bad_csv', 'The CSV input ends inside a quoted field.', 'Check for an unbalanced double quote.');
  if (field !== '' || row.length) {
    row.push(field);
    rows.push(row);
  }
  return rows.filter((r) => !(r.length === 1 && r[0] === ''));
}

/**
 * Extracts prompts. With `column`, the text is CSV (or TSV when `tsv` is set or the header
 * line holds a tab and no comma-separated column of that name).
 */
export function readPromptTable(text: string, options: { column?: string; tsv?: boolean; source?: string } = {}): PromptRow[] {
  const source = options.source ?? 'input';
  if (!options.column) {
    const out: PromptRow[] = [];
    text.split(/\r?\n/).forEach((line, i) => {
      if (line.trim() !== '') out.push({ row: i + 1, prompt: line });
    });
    return out;
  }
  const firstLine = text.slice(0, text.search(/\r?\n|$/));
  const delimiter = options.tsv || (firstLine.includes('\t') && !firstLine.split(',').includes(options.column)) ? '\t' : ',';
  const rows = parseDelimited(text, delimiter);
  const header = rows[0];
  if (!header) throw new RedlineError('bad_csv', `${source} is empty; expected a header row with a '${options.column}' column.`);
  const col = header.findIndex((h) => h.trim() === options.column);
  if (col < 0) {
    throw new RedlineError('bad_csv', `${source} has no column '${options.column}'.`, `Columns: ${header.map((h) => h.trim()).join(', ')}.`);
  }
  return rows.slice(1).map((r, i) => ({ row: i + 1, prompt: r[col] ?? '' })).filter((r) => r.prompt.trim() !== '');
}
