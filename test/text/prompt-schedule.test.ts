import { describe, expect, it } from 'vitest';
import { promptSchedule, scheduleIndexAt } from '../../src/text/prompt-schedule.ts';

const g = (prompt: string, steps = 10) => promptSchedule(prompt, steps).map((s) => [s.endAtStep, s.prompt]);

describe('promptSchedule: the doctests of A1111 get_learned_conditioning_prompt_schedules (10 steps)', () => {
  const cases: Array<[string, Array<[number, string]>]> = [
    ['test', [[10, 'test']]],
    ['a [b:3]', [[3, 'a '], [10, 'a b']]],
    ['a [b: 3]', [[3, 'a '], [10, 'a b']]],
    ['a [[[b]]:2]', [[2, 'a '], [10, 'a [[b]]']]],
    ['[(a:2):3]', [[3, ''], [10, '(a:2)']]],
    ['a [b : c : 1] d', [[1, 'a b  d'], [10, 'a  c  d']]],
    ['a[b:[c:d:2]:1]e', [[1, 'abe'], [2, 'ace'], [10, 'ade']]],
    ['a [unbalanced', [[10, 'a [unbalanced']]],
    ['a [b:.5] c', [[5, 'a  c'], [10, 'a b c']]],
    ['((a][:b:c [d:3]', [[3, '((a][:b:c '], [10, '((a][:b:c d']]],
    ['[a|(b:1.1)]', [[1, 'a'], [2, '(b:1.1)'], [3, 'a'], [4, '(b:1.1)'], [5, 'a'], [6, '(b:1.1)'], [7, 'a'], [8, '(b:1.1)'], [9, 'a'], [10, '(b:1.1)']]],
    ['[fe|]male', [[1, 'female'], [2, 'male'], [3, 'female'], [4, 'male'], [5, 'female'], [6, 'male'], [7, 'female'], [8, 'male'], [9, 'female'], [10, 'male']]],
    ['[fe|||]male', [[1, 'female'], [2, 'male'], [3, 'male'], [4, 'male'], [5, 'female'], [6, 'male'], [7, 'male'], [8, 'male'], [9, 'female'], [10, 'male']]],
  ];
  for (const [prompt, expected] of cases) {
    it(JSON.stringify(prompt), () => expect(g(prompt)).toEqual(expected));
  }
});

describe('promptSchedule: A1111 rules worked by hand', () => {
  it('[from:to:fraction] switches at int(fraction*steps)', () => {
    expect(g('a [cat:dog:0.5] on a sofa', 20)).toEqual([[10, 'a cat on a sofa'], [20, 'a dog on a sofa']]);
    expect(g('[cat:dog:0.33]', 20)).toEqual([[6, 'cat'], [20, 'dog']]);
  });
  it('an integer is a step; 1.0 means all steps (a fraction because of the dot)', () => {
    expect(g('[cat:dog:7]', 20)).toEqual([[7, 'cat'], [20, 'dog']]);
    expect(g('[cat:dog:1.0]', 20)).toEqual([[20, 'cat']]);
    expect(g('[cat:dog:1]', 20)).toEqual([[1, 'cat'], [20, 'dog']]);
  });
  it('[a::N] removes a after step N; steps beyond the total are capped; 0 or less never uses "from"', () => {
    expect(g('x [a::4]', 10)).toEqual([[4, 'x a'], [10, 'x ']]);
    expect(g('[a:b:50]', 10)).toEqual([[10, 'a']]);
    expect(g('[a:b:0]', 10)).toEqual([[10, 'b']]);
  });
  it('emphasis, weights and escapes pass through untouched', () => {
    expect(g('(a:1.2) [b] \\[c\\] [d:e:2]', 4)).toEqual([[2, '(a:1.2) [b] \\[c\\] d'], [4, '(a:1.2) [b] \\[c\\] e']]);
  });
  it('a "|" outside [..|..] or a trailing backslash leaves the whole prompt unscheduled', () => {
    expect(g('red|blue [a:b:2]', 4)).toEqual([[4, 'red|blue [a:b:2]']]);
    expect(g('[a:b:2] \\', 4)).toEqual([[4, '[a:b:2] \\']]);
  });
  it('colons that are not a schedule stay text', () => {
    expect(g('time: noon [a:b] (c:d)', 4)).toEqual([[4, 'time: noon [a:b] (c:d)']]);
  });
});

describe('scheduleIndexAt: which prompt the denoiser uses at 0-based step', () => {
  it('uses the first entry whose end >= step, like A1111 reconstruct_cond_batch', () => {
    const s = promptSchedule('[cat:dog:3]', 10); // [[3, cat], [10, dog]]
    expect([0, 1, 2, 3, 4, 9].map((step) => scheduleIndexAt(s, step))).toEqual([0, 0, 0, 0, 1, 1]);
  });
});
