import { describe, expect, it } from 'vitest';
import { extractExtraNetworks, parsePromptAttention, parseSubPrompts, pythonFloat } from '../../src/text/prompt-parser.ts';
import { RedlineError } from '../../src/errors.ts';

const pairs = (prompt: string) => parsePromptAttention(prompt).map((p) => [p.text, p.weight]);

describe('parsePromptAttention: the doctests of A1111 modules/prompt_parser.py', () => {
  it('plain text', () => {
    expect(pairs('normal text')).toEqual([['normal text', 1.0]]);
  });
  it('(word) multiplies by 1.1', () => {
    expect(pairs('an (important) word')).toEqual([['an ', 1.0], ['important', 1.1], [' word', 1.0]]);
  });
  it('an unclosed bracket applies to the rest', () => {
    expect(pairs('(unbalanced')).toEqual([['unbalanced', 1.1]]);
  });
  it('escapes are literal', () => {
    expect(pairs('\\(literal\\]')).toEqual([['(literal]', 1.0]]);
  });
  it('adjacent equal weights merge', () => {
    expect(pairs('(unnecessary)(parens)')).toEqual([['unnecessaryparens', 1.1]]);
  });
  it('nesting multiplies in A1111 order (same float64 bits)', () => {
    expect(pairs('a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).')).toEqual([
      ['a ', 1.0],
      ['house', 1.5730000000000004],
      [' ', 1.1],
      ['on', 1.0],
      [' a ', 1.1],
      ['hill', 0.55],
      [', sun, ', 1.1],
      ['sky', 1.4641000000000006],
      ['.', 1.1],
    ]);
  });
});

describe('parsePromptAttention: A1111 rules worked by hand', () => {
  it('((word)) is 1.1*1.1 and [word] is 1/1.1', () => {
    expect(pairs('((word))')).toEqual([['word', 1.1 * 1.1]]);
    expect(pairs('((word))')[0]![1]).toBe(1.2100000000000002);
    expect(pairs('[word]')).toEqual([['word', 1 / 1.1]]);
    expect(pairs('[[word]]')).toEqual([['word', (1 / 1.1) * (1 / 1.1)]]);
  });
  it('(word:1.3) and spaces around the weight', () => {
    expect(pairs('(word:1.3)')).toEqual([['word', 1.3]]);
    expect(pairs('(word: 1.5 )')).toEqual([['word', 1.5]]);
    expect(pairs('(word:.5)')).toEqual([['word', 0.5]]);
    expect(pairs('(word:-1)')).toEqual([['word', -1]]);
  });
  it('a weight without an open bracket, stray closers and colons stay text', () => {
    expect(pairs('a:1.2) b')).toEqual([['a:1.2) b', 1.0]]);
    expect(pairs('a ) b ]')).toEqual([['a ) b ]', 1.0]]);
    expect(pairs('time: noon')).toEqual([['time: noon', 1.0]]);
  });
  it('an unclosed [ divides the rest by 1.1', () => {
    expect(pairs('a [b')).toEqual([['a ', 1.0], ['b', 1 / 1.1]]);
  });
  it('\\\\ is a literal backslash; a lone backslash is dropped', () => {
    expect(pairs('a\\\\b')).toEqual([['a\\b', 1.0]]);
    expect(pairs('a\\b')).toEqual([['ab', 1.0]]);
  });
  it('escaped brackets inside emphasis', () => {
    expect(pairs('(a \\(b\\))')).toEqual([['a (b)', 1.1]]);
  });
  it('BREAK splits with weight -1 and eats the whitespace around it', () => {
    expect(pairs('a castle BREAK a dragon')).toEqual([['a castle', 1.0], ['BREAK', -1], ['a dragon', 1.0]]);
    expect(pairs('BREAK')).toEqual([['', 1.0], ['BREAK', -1], ['', 1.0]]);
  });
  it('BREAK must be a whole upper-case word', () => {
    expect(pairs('aBREAK b')).toEqual([['aBREAK b', 1.0]]);
    expect(pairs('a break b')).toEqual([['a break b', 1.0]]);
    expect(pairs('éBREAK')).toEqual([['éBREAK', 1.0]]);
    expect(pairs('a,BREAK,b')).toEqual([['a,', 1.0], ['BREAK', -1], [',b', 1.0]]);
  });
  it('BREAK inside brackets gets its -1 scaled like any piece', () => {
    expect(pairs('(a BREAK b)')).toEqual([['a', 1.1], ['BREAK', -1.1], ['b', 1.1]]);
  });
  it('an empty prompt is one empty piece', () => {
    expect(pairs('')).toEqual([['', 1.0]]);
  });
  it('an unparsable weight fails as A1111 does, with a RedlineError', () => {
    expect(() => parsePromptAttention('(a:1.2.3)')).toThrow(RedlineError);
    expect(() => parsePromptAttention('(a:.)')).toThrow(/not a number/);
  });
});

describe('pythonFloat', () => {
  it('accepts what Python float() accepts', () => {
    expect(pythonFloat('1.5')).toBe(1.5);
    expect(pythonFloat(' .5 ')).toBe(0.5);
    expect(pythonFloat('5.')).toBe(5);
    expect(pythonFloat('+2')).toBe(2);
    expect(pythonFloat('1e-2')).toBe(0.01);
    expect(pythonFloat('1_0')).toBe(10);
    expect(pythonFloat('١.٥')).toBe(1.5); // Arabic-Indic digits
    expect(pythonFloat('inf')).toBe(Infinity);
  });
  it('rejects what Python float() rejects', () => {
    for (const bad of ['.', '', '1.2.3', '1__0', '_1', 'abc', '0x10', '--1']) expect(pythonFloat(bad)).toBeUndefined();
  });
});

describe('extractExtraNetworks: A1111 extra-network tags', () => {
  it('removes a lora tag and reads one weight as te = unet', () => {
    const r = extractExtraNetworks('<lora:add_detail:0.5> a city');
    expect(r.prompt).toBe(' a city');
    expect(r.loras).toEqual([{ name: 'add_detail', te: 0.5, unet: 0.5, tag: '<lora:add_detail:0.5>' }]);
    expect(r.others).toEqual([]);
  });
  it('no weight means 1.0', () => {
    expect(extractExtraNetworks('x <lora:style>').loras[0]).toMatchObject({ name: 'style', te: 1, unet: 1 });
  });
  it('<lora:name:te:unet> and <lora:name:te:unet:dyn>', () => {
    expect(extractExtraNetworks('<lora:a:0.8:0.3>').loras[0]).toMatchObject({ name: 'a', te: 0.8, unet: 0.3 });
    expect(extractExtraNetworks('<lora:a:1:0.5:16>').loras[0]).toMatchObject({ te: 1, unet: 0.5, dyn: 16 });
  });
  it('named te= / unet= override positional ones', () => {
    expect(extractExtraNetworks('<lora:a:0.7:unet=0.2>').loras[0]).toMatchObject({ te: 0.7, unet: 0.2 });
    expect(extractExtraNetworks('<lora:a:te=0.4>').loras[0]).toMatchObject({ te: 0.4, unet: 0.4 });
    expect(extractExtraNetworks('<lora:a:unet=0.3:te=0>').loras[0]).toMatchObject({ te: 0, unet: 0.3 });
  });
  it('several tags, lyco alias, other kinds removed and reported', () => {
    const r = extractExtraNetworks('<lora:my_lora_v2:1.0>, <hypernet:anime:0.8> <lyco:x:0.25>');
    expect(r.prompt).toBe(',  ');
    expect(r.loras.map((l) => [l.name, l.te])).toEqual([['my_lora_v2', 1], ['x', 0.25]]);
    expect(r.others).toEqual([{ kind: 'hypernet', items: ['anime', '0.8'], tag: '<hypernet:anime:0.8>' }]);
  });
  it('names may hold spaces, dots and dashes; not a tag without a colon', () => {
    const r = extractExtraNetworks('<lora:My Style-v1.2:0.6> <not a tag> <lora>');
    expect(r.loras[0]).toMatchObject({ name: 'My Style-v1.2', te: 0.6 });
    expect(r.prompt).toBe(' <not a tag> <lora>');
  });
  it('bad weights are errors, never a silent default', () => {
    expect(() => extractExtraNetworks('<lora:a:strong>')).toThrow(RedlineError);
    expect(() => extractExtraNetworks('<lora:a:inf>')).toThrow(/finite/);
    expect(() => extractExtraNetworks('<lora:te=1>')).toThrow(/names no LoRA/);
    expect(() => extractExtraNetworks('<lora:a:1:1:big>')).toThrow(/dyn/);
  });
});

describe('parseSubPrompts: A1111 composable prompts (get_multicond_prompt_list)', () => {
  it('no AND, no weight: the prompt itself with weight 1', () => {
    expect(parseSubPrompts('a cat, oil painting')).toEqual([{ text: 'a cat, oil painting', weight: 1 }]);
  });
  it('AND splits; a trailing :number is the part weight; trailing spaces go, leading ones stay', () => {
    expect(parseSubPrompts('a cat AND a dog:0.5')).toEqual([{ text: 'a cat', weight: 1 }, { text: ' a dog', weight: 0.5 }]);
    expect(parseSubPrompts('a cat : 1.5 AND a dog :.7  ')).toEqual([{ text: 'a cat', weight: 1.5 }, { text: ' a dog', weight: 0.7 }]);
  });
  it('a trailing weight applies without AND too', () => {
    expect(parseSubPrompts('a cat:1.2')).toEqual([{ text: 'a cat', weight: 1.2 }]);
    expect(parseSubPrompts('a cat:-1')).toEqual([{ text: 'a cat', weight: -1 }]);
  });
  it('emphasis weights are not part weights; AND must be a whole upper-case word', () => {
    expect(parseSubPrompts('(a cat:1.2)')).toEqual([{ text: '(a cat:1.2)', weight: 1 }]);
    expect(parseSubPrompts('SANDY and ANDES')).toEqual([{ text: 'SANDY and ANDES', weight: 1 }]);
  });
});
