// Coverage of graphic-injury wording, built for the category rather than one example:
// every inflection of the graphic-injury verbs and nouns, in sentences that put them beside
// body words (the inanimate group's "mannequin head" once made every "head" inanimate, so
// "a decapitated head" read as harmless), and the harmless look-alikes that must stay
// harmless. Words only.
import { describe, expect, it } from 'vitest';
import { compileGroups } from '../../src/safety/screen/lexicon.ts';
import { defaultPolicy } from '../../src/safety/policy/policy.ts';
import { Screener } from '../../src/safety/screen/screener.ts';

const screener = new Screener(defaultPolicy());
const injury = (prompt: string): number => {
  const r = screener.screen({ prompt }, 'admin');
  return r.categories.some((c) => c.category === 'graphic_injury') ? r.intensity : 0;
};

/** Stems and their inflections: each must read as graphic injury at level 3. */
const GRAPHIC_FORMS: Record<string, string[]> = {
  decapitat: ['decapitate', 'decapitates', 'decapitated', 'decapitating', 'decapitation', 'decapitations'],
  behead: ['behead', 'beheads', 'beheaded', 'beheading', 'beheadings'],
  dismember: ['dismember', 'dismembers', 'dismembered', 'dismembering', 'dismemberment'],
  disembowel: ['disembowel', 'disembowels', 'disemboweled', 'disembowelled', 'disemboweling', 'disembowelment'],
  eviscerat: ['eviscerate', 'eviscerates', 'eviscerated', 'eviscerating', 'evisceration'],
  impal: ['impale', 'impales', 'impaled', 'impaling', 'impalement'],
  mutilat: ['mutilate', 'mutilates', 'mutilated', 'mutilating', 'mutilation'],
  flay: ['flay', 'flays', 'flayed', 'flaying'],
  exsanguinat: ['exsanguinated', 'exsanguination'],
  gore: ['gore', 'gory', 'gorier', 'goriest', 'gore-soaked', 'covered in gore'],
  entrails: ['entrails', 'entrail', 'viscera', 'innards', 'spilled guts'],
  severed: ['severed', 'severed head', 'severed limbs', 'severed body parts'],
  splatter: ['splatter', 'splattered', 'brains splattered', 'blood splattered'],
  pieces: ['hacked to pieces', 'torn to pieces', 'blown to bits', 'torn limbs'],
  other: ['headless corpse', 'protruding bone', 'gouged eyes', 'burned to death', 'slaughtering', 'butchering', 'immolated'],
};

describe('graphic-injury vocabulary', () => {
  for (const [stem, forms] of Object.entries(GRAPHIC_FORMS)) {
    it(`${stem}: every form, alone and beside a person or a body part`, () => {
      for (const form of forms) {
        for (const prompt of [form, `a ${form} soldier on a battlefield`, `concept art, ${form} head, horror film`, `the knight was ${form}`]) {
          expect(injury(prompt), prompt).toBe(3);
        }
      }
    });
  }

  it('"decapitated head" and its kin: a body word no longer reads as inanimate', () => {
    for (const p of ['a decapitated head', 'an impaled head on a pike', 'a mutilated head', 'beheaded head on a spike', 'broken head and shattered skull']) {
      expect(injury(p), p).toBeGreaterThanOrEqual(2);
    }
  });

  it('injury words with context: mangled bodies, gutted victims, disfigurement and amputation (level 2)', () => {
    expect(injury('a mangled hand')).toBe(3);
    expect(injury('a gutted man hanging from a hook')).toBe(3);
    expect(injury('gutting the victim')).toBe(3);
    expect(injury('a scalped soldier')).toBe(3);
    for (const p of ['a disfigured face', 'facial disfigurement', 'gored by a bull', 'an amputated leg', 'battlefield amputation']) expect(injury(p), p).toBe(2);
  });

  it('written with evasions: leetspeak, spacing, repeated letters', () => {
    for (const p of ['d3capitated', 'd.i.s.m.e.m.b.e.r.e.d', 'goooory', 'impal3d']) expect(injury(p), p).toBe(3);
  });

  it('harmless look-alikes stay harmless', () => {
    for (const p of [
      'an impala at sunrise on the savanna', 'a herd of impalas drinking', 'the headless horseman, halloween pumpkin',
      'scalping tickets outside the stadium', 'gutted fish on ice at the market', 'I was gutted when my team lost',
      'he was gutted by the news', 'a mangled car after the crash', 'a decapitated statue in the ruins',
      'a mannequin head in a shop window', 'an amputated tree branch', 'gore-tex hiking jacket', 'al gore giving a speech',
      'a gorilla eating fruit', 'slaughterhouse five book cover', 'the butcher shop at dawn',
      'she severed ties with the company', 'they severed diplomatic relations', 'he severed the rope',
      'a flayed fish at the market', 'tomato sauce splattered on a kitchen wall', 'mud splatter on a jeep',
    ]) expect(injury(p), p).toBe(0);
  });
});

describe('lexicon groups', () => {
  it('hold single words: a phrase in a group is refused, since its words would each count alone', () => {
    expect(() => compileGroups({ inanimate: ['statue', 'mannequin head'] })).toThrow(/groups\.inanimate: "mannequin head" is not one word/);
    expect(compileGroups({ inanimate: ['statue', 'Statues'] }).get('inanimate')).toEqual(new Set(['statue', 'statues']));
  });
});
