import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RedlineError } from '../../src/errors.ts';
import { ClipTokenizer, loadTokenizer, normalizeText, resolveTokenizerDir } from '../../src/text/tokenizer.ts';
import { letterId, letterTokenizer } from './synthetic-tokenizer.ts';

function withMerges(extraTokens: string[], merges: string[]): ClipTokenizer {
  const base = letterTokenizer();
  const vocab = new Map(base.vocab);
  extraTokens.forEach((t, i) => vocab.set(t, 1000 + i));
  return new ClipTokenizer(vocab, merges);
}

describe('normalization as the tokenizers crate does it', () => {
  it('lowercases character by character: a final capital sigma becomes σ, not ς', () => {
    expect(normalizeText('ΣΑΣ')).toBe('σασ');
    expect('ΣΑΣ'.toLowerCase()).toBe('σας'); // what a whole-string lowercase would give
  });
  it('collapses Unicode White_Space runs (NEL, NBSP, ideographic space) but not U+FEFF or U+200B', () => {
    expect(normalizeText('a\u0085\u00a0\u3000 b')).toBe('a b');
    expect(normalizeText('a\ufeffb\u200bc')).toBe('a\ufeffb\u200bc');
  });
  it('composes to NFC', () => {
    expect(normalizeText('cafe\u0301')).toBe('caf\u00e9');
  });
});

describe('BPE', () => {
  it('merges by rank, lowest first, with </w> on the last symbol', () => {
    // "abc" -> a b c</w>; (b, c</w>) ranks 0, (a, b) ranks 1: b+c</w> first, then no pair is left.
    const tok = withMerges(['bc</w>', 'ab'], ['b c</w>', 'a b']);
    expect(tok.tokenize('abc')).toEqual([letterId('a') - 256, 1000]);
    // with the ranks swapped, a+b wins and c</w> stays alone.
    const swapped = withMerges(['ab', 'bc</w>'], ['a b', 'b c</w>']);
    expect(swapped.tokenize('abc')).toEqual([1000, letterId('c')]);
  });
  it('merges repeated pairs left to right without overlap', () => {
    const tok = withMerges(['aa'], ['a a']);
    // a a a a</w>: only the first two form (a, a); the third pairs with a</w>.
    expect(tok.tokenize('aaaa')).toEqual([1000, letterId('a') - 256, letterId('a')]);
  });
  it('splits letters, single digits and punctuation runs; drops whitespace', () => {
    const tok = letterTokenizer();
    expect(tok.tokenize(' x  1 2 ; y ')).toEqual([letterId('x'), letterId('1'), letterId('2'), letterId(';'), letterId('y')]);
  });
  it('special tokens in the raw text become their ids', () => {
    const tok = letterTokenizer();
    expect(tok.tokenize('x<|endoftext|>y')).toEqual([letterId('x'), 49407, letterId('y')]);
    expect(tok.tokenize('<|ENDOFTEXT|>').includes(49407)).toBe(false);
  });
  it('pads with EOS to 77 and truncates to BOS + 75 + EOS', () => {
    const tok = letterTokenizer();
    const long = tok.encodePadded(Array(80).fill('x').join(' '));
    expect(long).toHaveLength(77);
    expect(long[0]).toBe(49406);
    expect(long[76]).toBe(49407);
    expect(long.slice(1, 76)).toEqual(Array(75).fill(letterId('x')));
    expect(tok.encodeUntruncated('x')).toEqual([49406, letterId('x'), 49407]);
  });
  it('a symbol missing from the vocabulary is a clear error', () => {
    const tok = new ClipTokenizer(new Map([['<|startoftext|>', 49406], ['<|endoftext|>', 49407]]), []);
    expect(() => tok.tokenize('q')).toThrow(/vocab.json and merges.txt do not belong together/);
  });
  it('rejects a vocabulary whose special ids are not CLIP\'s', () => {
    expect(() => new ClipTokenizer(new Map([['<|startoftext|>', 1], ['<|endoftext|>', 2]]), [])).toThrow(RedlineError);
    expect(() => new ClipTokenizer(new Map(), [])).toThrow(/lacks the special token/);
  });
});

describe('loadTokenizer and resolveTokenizerDir', () => {
  const root = mkdtempSync(join(tmpdir(), 'redline-tok-'));
  const writeTokenizer = (dir: string, files: { vocab?: string; merges?: string } = {}) => {
    mkdirSync(dir, { recursive: true });
    if (files.vocab !== undefined) writeFileSync(join(dir, 'vocab.json'), files.vocab);
    if (files.merges !== undefined) writeFileSync(join(dir, 'merges.txt'), files.merges);
  };
  const vocabJson = JSON.stringify(Object.fromEntries(letterTokenizer().vocab));
  const mergesTxt = '#version: 0.2\n';

  it('loads vocab.json and merges.txt', () => {
    const dir = join(root, 'ok');
    writeTokenizer(dir, { vocab: vocabJson, merges: mergesTxt });
    expect(loadTokenizer(dir).tokenize('x')).toEqual([letterId('x')]);
  });

  it('names missing and broken files', () => {
    const dir = join(root, 'partial');
    writeTokenizer(dir, { vocab: vocabJson });
    expect(() => loadTokenizer(dir)).toThrow(/lacks merges.txt/);
    const bad = join(root, 'badjson');
    writeTokenizer(bad, { vocab: '{not json', merges: mergesTxt });
    expect(() => loadTokenizer(bad)).toThrow(/not valid JSON/);
    const badMerge = join(root, 'badmerge');
    writeTokenizer(badMerge, { vocab: vocabJson, merges: '#version: 0.2\nab\n' });
    expect(() => loadTokenizer(badMerge)).toThrow(/line 2 is not "left right"/);
  });

  it('explicit --tokenizer wins and must hold both files', () => {
    const dir = join(root, 'explicit');
    writeTokenizer(dir, { vocab: vocabJson, merges: mergesTxt });
    expect(resolveTokenizerDir({ explicit: dir, cacheDir: join(root, 'nowhere') })).toBe(dir);
    expect(() => resolveTokenizerDir({ explicit: join(root, 'absent') })).toThrow(/no such folder/);
    const half = join(root, 'explicit-half');
    writeTokenizer(half, { merges: mergesTxt });
    expect(() => resolveTokenizerDir({ explicit: half })).toThrow(/lacks vocab.json/);
  });

  it('finds a diffusers folder\'s tokenizer/, also from a weights file inside it', () => {
    const model = join(root, 'diffusers-model');
    writeTokenizer(join(model, 'tokenizer'), { vocab: vocabJson, merges: mergesTxt });
    mkdirSync(join(model, 'unet'), { recursive: true });
    writeFileSync(join(model, 'model_index.json'), '{}');
    writeFileSync(join(model, 'unet', 'diffusion_pytorch_model.safetensors'), '');
    expect(resolveTokenizerDir({ modelPath: model })).toBe(join(model, 'tokenizer'));
    expect(resolveTokenizerDir({ modelPath: join(model, 'unet', 'diffusion_pytorch_model.safetensors') })).toBe(join(model, 'tokenizer'));
  });

  it('a single-file checkpoint uses the cache folder', () => {
    const ckpt = join(root, 'models', 'sd15.safetensors');
    mkdirSync(join(root, 'models'), { recursive: true });
    writeFileSync(ckpt, '');
    const cache = join(root, 'cache');
    writeTokenizer(cache, { vocab: vocabJson, merges: mergesTxt });
    expect(resolveTokenizerDir({ modelPath: ckpt, cacheDir: cache })).toBe(cache);
  });

  it('says what is missing where, and how to provide it', () => {
    const ckpt = join(root, 'models', 'sd15.safetensors');
    const cache = join(root, 'empty-cache');
    writeTokenizer(cache, { vocab: vocabJson });
    let err: unknown;
    try {
      resolveTokenizerDir({ modelPath: ckpt, cacheDir: cache });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RedlineError);
    const msg = (err as RedlineError).message;
    expect((err as RedlineError).code).toBe('tokenizer_missing');
    expect(msg).toContain(ckpt);
    expect(msg).toContain(`${cache} (lacks merges.txt)`);
    expect(msg).toContain('--tokenizer DIR');
    expect(() => resolveTokenizerDir({})).toThrow(/the tokenizer cache \(none is configured\)/);
    expect(() => resolveTokenizerDir({ modelPath: join(root, 'absent.safetensors') }))
      .toThrow(`${join(root, 'absent.safetensors')} (no such file or folder)`);
    expect(() => resolveTokenizerDir({ modelPath: ckpt })).toThrow('(a single-file checkpoint: it carries no tokenizer)');
  });
});
