import { describe, expect, it } from 'vitest';
import { RedlineError } from '../../../src/errors.ts';
import { parseCaption, processCaption, tagFrequency } from '../../../src/train/data/captions.ts';
import { RunRngs, TrainRng } from '../../../src/train/data/rng.ts';

const opts = { shuffleCaption: true, keepTokens: 1, captionDropoutRate: 0, captionTagDropoutRate: 0 };

describe('captions', () => {
  it('takes the intensity tag out and records the level', () => {
    expect(parseCaption('a red circle, intensity:2, plain background\n', 'x.txt')).toEqual({ text: 'a red circle, plain background', intensity: 2 });
    expect(parseCaption('a red circle', 'x.txt')).toEqual({ text: 'a red circle', intensity: null });
  });

  it('refuses bad or repeated intensity tags, naming the file', () => {
    expect(() => parseCaption('a, intensity:7', 'd/a.txt')).toThrow(/d\/a\.txt.*intensity:7/);
    expect(() => parseCaption('a, intensity:1, intensity:2', 'd/b.txt')).toThrow(RedlineError);
  });

  it('shuffles all tags but the first keep_tokens, the same way for the same seed', () => {
    const text = 'sks, one, two, three, four, five, six';
    const a = Array.from({ length: 5 }, (_, i) => processCaption(text, opts, new TrainRng(7 + i)));
    const b = Array.from({ length: 5 }, (_, i) => processCaption(text, opts, new TrainRng(7 + i)));
    expect(a).toEqual(b);
    for (const c of a) {
      expect(c.startsWith('sks, ')).toBe(true);
      expect(c.split(', ').sort()).toEqual(text.split(', ').sort());
    }
    expect(new Set(a).size).toBeGreaterThan(1);
  });

  it('leaves the caption alone when no edit is on and draws nothing', () => {
    const rng = new TrainRng(1);
    const before = rng.state();
    expect(processCaption('b, a', { ...opts, shuffleCaption: false }, rng)).toBe('b, a');
    expect(rng.state()).toEqual(before);
  });

  it('drops whole captions at the dropout rate', () => {
    const rng = new TrainRng(3);
    const n = 4000;
    let dropped = 0;
    for (let i = 0; i < n; i++) if (processCaption('x, y', { ...opts, captionDropoutRate: 0.25 }, rng) === '') dropped++;
    // binomial sd = sqrt(4000 * 0.25 * 0.75) = 27: 5 sd either side
    expect(Math.abs(dropped - 1000)).toBeLessThan(140);
    expect(processCaption('x, y', { ...opts, captionDropoutRate: 1 }, rng)).toBe('');
  });

  it('counts tags like ss_tag_frequency', () => {
    expect(tagFrequency(['a, b', ' b ,c', ''])).toEqual({ a: 1, b: 2, c: 1 });
  });
});

describe('run RNG streams', () => {
  it('restores a saved state exactly, including a pending normal', () => {
    const r = new RunRngs(42);
    r.noise.normal();
    const saved = JSON.parse(JSON.stringify(r.state()));
    const next = [r.noise.normal(), r.noise.normal(), r.order.nextU32(), r.timestep.int(1000)];
    const s = new RunRngs(0);
    s.restore(saved);
    expect([s.noise.normal(), s.noise.normal(), s.order.nextU32(), s.timestep.int(1000)]).toEqual(next);
  });

  it('gives independent streams per purpose and per seed', () => {
    const a = new RunRngs(1);
    const b = new RunRngs(2);
    expect(a.order.nextU32()).not.toBe(a.noise.nextU32());
    expect(new RunRngs(1).order.nextU32()).not.toBe(b.order.nextU32());
  });

  it('draws standard normals', () => {
    const r = new TrainRng(9);
    const xs = Float32Array.from({ length: 20000 }, () => r.normal());
    const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
    const variance = xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length;
    expect(Math.abs(mean)).toBeLessThan(0.03); // sd of the mean 0.007
    expect(Math.abs(variance - 1)).toBeLessThan(0.05); // sd of the variance 0.01
  });
});
