import { describe, expect, it } from 'vitest';
import {
  caseFold, foldText, isIgnorable, leetReadings, mergeSpacedLetters, nfkc, normalizeForMatching,
  runsCover, skeleton, squeeze, stripDiacritics, tokenize,
} from '../../src/safety/screen/normalize.ts';

const norm = normalizeForMatching;

describe('character steps', () => {
  it('NFKC folds fullwidth, mathematical alphanumerics, circled letters and ligatures', () => {
    expect(nfkc('ｂｌｏｏｄ')).toBe('blood');
    expect(nfkc('\u{1D41B}\u{1D425}\u{1D428}\u{1D428}\u{1D41D}')).toBe('blood'); // mathematical bold
    expect(nfkc('\u{1D4F0}\u{1D4F8}\u{1D4FB}\u{1D4EE}')).toBe('gore'); // mathematical bold script
    expect(nfkc('ⓖⓞⓡⓔ')).toBe('gore');
    expect(nfkc('ﬁght')).toBe('fight');
    expect(norm('ＧＯＲＥ')).toBe('gore');
  });

  it('removes zero-width, bidi and other format characters (Cf)', () => {
    for (const ch of ['\u200B', '\u200C', '\u200D', '\u2060', '\uFEFF', '\u00AD', '\u202E', '\u2066', '\u180E']) {
      expect(isIgnorable(ch)).toBe(true);
      expect(norm(`go${ch}re`)).toBe('gore');
    }
    expect(norm('g\uFE0Fore')).toBe('gore'); // variation selector
    expect(isIgnorable('a')).toBe(false);
  });

  it('strips diacritics and combining overlays', () => {
    expect(stripDiacritics('nüdé')).toBe('nude');
    expect(norm('g\u0336o\u0336r\u0336e\u0336')).toBe('gore'); // strikethrough overlay
    expect(norm('ǵőŕȩ')).toBe('gore');
  });

  it('case-folds, including the full folding of sharp s', () => {
    expect(caseFold('GoRe')).toBe('gore');
    expect(norm('STRAẞE')).toBe('strasse');
    expect(norm('Straße')).toBe('strasse');
  });

  it('maps Cyrillic, Greek, Armenian, Cherokee and small-capital look-alikes to Latin', () => {
    expect(skeleton('\u0441\u0430\u0440')).toBe('cap'); // Cyrillic с а р
    expect(norm('\u0412\u041E\u041C\u0412')).toBe('bomb'); // Cyrillic capitals В О М В
    expect(norm('\u03BA\u03B9\u03BB\u03BB')).not.toBe('kill'); // Greek lambda is not l: no false mapping
    expect(norm('\u039A\u0399\u039C')).toBe('kim'); // Greek capitals Κ Ι Μ
    expect(norm('\u0585\u057D')).toBe('ou'); // Armenian օ ս
    expect(norm('\u13A2\u13AC\u13AC')).toBe('tee'); // Cherokee Ꭲ Ꭼ Ꭼ
    expect(norm('\u1D00\u0299\u1D04')).toBe('abc'); // small capitals
    expect(norm('ⅽhiⅼd')).toBe('child'); // Roman numeral letters, folded by NFKC
    expect(norm('\u{1F1E6}\u{1F1E7}')).toBe('ab'); // regional indicators
  });

  it('keeps a map from every folded character back to the original text', () => {
    const original = 'Ａ\u200Bb\u{1D41C}ß';
    const f = foldText(original);
    expect(f.text).toBe('abcss');
    expect(Array.from(f.origStart)).toEqual([0, 2, 3, 5, 5]);
    expect(Array.from(f.origEnd)).toEqual([1, 3, 5, 6, 6]);
  });
});

describe('token steps', () => {
  it('reads leetspeak only inside tokens that also hold letters', () => {
    expect(norm('bl00d')).toBe('blood');
    expect(norm('g0r3')).toBe('gore');
    expect(norm('$3x')).toBe('sex');
    expect(norm('k!d')).toBe('kid');
    // Plain numbers keep their digits: ages and years must stay numbers.
    expect(norm('13 year old, 1999')).toBe('13 year old 1999');
  });

  it('reads an ambiguous 1 or | both as i and as l', () => {
    expect(leetReadings('b1ood')).toEqual(['biood', 'blood']);
    expect(leetReadings('k1||')).toContain('kill');
    const [tok] = tokenize(foldText('b1ood'));
    expect([tok!.text, ...(tok!.alts ?? []).map((a) => a.text)]).toContain('blood');
  });

  it('reads an all-symbol token as leetspeak as another reading', () => {
    const [tok] = tokenize(foldText('!5!5'));
    expect((tok!.alts ?? []).map((a) => a.text)).toContain('isis');
  });

  it('treats edge punctuation as punctuation, keeping the letter reading as an alternative', () => {
    const [tok] = tokenize(foldText('wow!'));
    expect(tok!.text).toBe('wow');
    expect((tok!.alts ?? []).map((a) => a.text)).toContain('wowi');
  });

  it('splits a leading number from a word ("13yo", "1girl") and keeps both', () => {
    const [tok] = tokenize(foldText('13yo'));
    expect(tok!.num).toBe(13);
    expect((tok!.alts ?? []).map((a) => a.text)).toContain('yo');
  });

  it('re-joins spaced-out letters, using the larger gaps as word boundaries', () => {
    expect(norm('n u d e')).toBe('nude');
    expect(norm('n.u.d.e art')).toBe('nude art');
    expect(norm('g-o-r-e   f-i-l-m')).toBe('gore film');
    expect(norm('g o r e     f i l m')).toBe('gore film');
    const text = 'a b l o o d y';
    const toks = mergeSpacedLetters(tokenize(foldText(text)), text);
    expect(toks).toHaveLength(1);
    expect(toks[0]!.unsegmented).toBe(true);
    expect(text.slice(toks[0]!.start, toks[0]!.end)).toBe(text);
    // Ordinary text with single letters is left alone.
    expect(norm('plan a or b')).toBe('plan a or b');
  });

  it('collapses repeated letters but never below the spelling of the word', () => {
    const nude = squeeze('nude');
    const typed = squeeze('nuuuuude');
    expect(typed.key).toBe(nude.key);
    expect(runsCover(typed.runs, nude.runs)).toBe(true);
    const teen = squeeze('teen');
    const ten = squeeze('ten');
    expect(ten.key).toBe(teen.key);
    expect(runsCover(ten.runs, teen.runs)).toBe(false); // "ten" is not "teen"
    expect(runsCover(squeeze('teeeen').runs, teen.runs)).toBe(true);
  });
});
