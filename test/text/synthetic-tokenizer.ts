import { ClipTokenizer } from '../../src/text/tokenizer.ts';

/**
 * A CLIP-layout tokenizer without merges: every byte is a token, so each single-letter
 * word ("a", "b", ",") is exactly one token and counts in tests can be worked out by hand.
 */
export function letterTokenizer(): ClipTokenizer {
  const printable: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) printable.push(b);
  for (let b = 0xa1; b <= 0xac; b++) printable.push(b);
  for (let b = 0xae; b <= 0xff; b++) printable.push(b);
  const chars: string[] = [];
  let extra = 0;
  for (let b = 0; b < 256; b++) chars.push(printable.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + extra++));
  const vocab = new Map<string, number>();
  chars.forEach((c, i) => vocab.set(c, i));
  chars.forEach((c, i) => vocab.set(c + '</w>', 256 + i));
  vocab.set('<|startoftext|>', 49406);
  vocab.set('<|endoftext|>', 49407);
  return new ClipTokenizer(vocab, []);
}

/** Id of a one-character word in letterTokenizer(). */
export function letterId(ch: string): number {
  return 256 + ch.charCodeAt(0);
}
