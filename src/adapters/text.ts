// Adapter metadata is written by whoever trained or re-uploaded the file: treat every
// string as hostile. Control characters (terminal escape sequences), bidirectional
// overrides and zero-width characters are removed, length is capped, and what remains is
// plain text that interfaces still escape for their medium (JSON.stringify, HTML escaping).

// C0/C1 controls except none (tabs and newlines flatten to spaces first), bidi embeddings,
// overrides and isolates, zero-width and BOM characters.
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;

export function cleanText(value: unknown, maxLength: number): string {
  if (typeof value !== 'string') return '';
  let s = value.replace(/[\t\r\n]+/g, ' ').replace(UNSAFE, '').trim();
  if (s.length > maxLength) s = `${[...s].slice(0, maxLength - 1).join('')}…`;
  return s;
}

/** A finite number parsed from a metadata string within [min, max], else null. */
export function cleanNumber(value: unknown, min: number, max: number): number | null {
  if (typeof value !== 'string' && typeof value !== 'number') return null;
  const s = typeof value === 'string' ? value.trim() : value;
  if (s === '' || (typeof s === 'string' && s.length > 32)) return null;
  const n = Number(s);
  return Number.isFinite(n) && n >= min && n <= max ? n : null;
}

/** Escapes text for HTML contexts (the web UI uses its own escaping too; this is for reports). */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}
