import { describe, expect, it } from 'vitest';
import { SeededRandom } from '../../src/train/procedural/random.ts';
import { analyzeScene, captionOf, parseCaption, renderScene, sampleScene, type SceneSpec } from '../../src/train/procedural/scenes.ts';

function scenes(n: number, seed: number, splatter: 0 | 1 | 2 | 3 = 0): SceneSpec[] {
  const rng = new SeededRandom(seed);
  return Array.from({ length: n }, () => sampleScene(rng, splatter));
}

/** Degrades an image the way a small generator's output is imperfect: blur and noise. */
function degrade(rgb: Uint8Array, w: number, h: number, seed: number): Uint8Array {
  const out = new Uint8Array(rgb.length);
  const rng = new SeededRandom(seed);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        let k = 0;
        for (let dy = -1; dy <= 1; dy++) {
          for (let dx = -1; dx <= 1; dx++) {
            const xx = Math.min(w - 1, Math.max(0, x + dx));
            const yy = Math.min(h - 1, Math.max(0, y + dy));
            sum += rgb[(yy * w + xx) * 3 + c]!;
            k++;
          }
        }
        const noise = (rng.next() + rng.next() + rng.next() - 1.5) * 20;
        out[(y * w + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(sum / k + noise)));
      }
    }
  }
  return out;
}

describe('procedural scenes', () => {
  it('are deterministic for a seed and differ between seeds', () => {
    const [a] = scenes(1, 7);
    const [b] = scenes(1, 7);
    const [c] = scenes(1, 8);
    expect(renderScene(a!)).toEqual(renderScene(b!));
    expect(Buffer.compare(Buffer.from(renderScene(a!)), Buffer.from(renderScene({ ...c!, seed: a!.seed + 1 })))).not.toBe(0);
  });

  it('captions parse back to the properties they were written from', () => {
    for (const spec of scenes(100, 3)) {
      const parsed = parseCaption(captionOf(spec));
      expect(parsed).toEqual({
        size: spec.size,
        color: spec.color,
        shape: spec.shape,
        position: spec.position,
        backgroundColor: spec.backgroundColor,
        background: spec.background,
      });
    }
  });

  it("the analysis rules recover each drawn scene's colour, shape and position", () => {
    const specs = scenes(200, 11);
    let color = 0;
    let shape = 0;
    let position = 0;
    for (const spec of specs) {
      const a = analyzeScene(renderScene(spec), 128, 128);
      if (a.color === spec.color) color++;
      if (a.shape === spec.shape) shape++;
      if (a.position === spec.position) position++;
    }
    expect(color / specs.length).toBeGreaterThanOrEqual(0.98);
    expect(position / specs.length).toBeGreaterThanOrEqual(0.98);
    expect(shape / specs.length).toBeGreaterThanOrEqual(0.95);
  });

  it('the analysis tolerates blur and noise, as generated images have', () => {
    const specs = scenes(80, 12);
    let color = 0;
    let position = 0;
    for (const [i, spec] of specs.entries()) {
      const a = analyzeScene(degrade(renderScene(spec), 128, 128, i), 128, 128);
      if (a.color === spec.color) color++;
      if (a.position === spec.position) position++;
    }
    expect(color / specs.length).toBeGreaterThanOrEqual(0.9);
    expect(position / specs.length).toBeGreaterThanOrEqual(0.9);
  });

  it('splatter coverage rises with the level and is absent at level 0', () => {
    const coverage = ([0, 1, 2, 3] as const).map((level) => {
      const specs = scenes(30, 21, level);
      return specs.reduce((s, spec) => s + analyzeScene(renderScene(spec), 128, 128).splatterCoverage, 0) / specs.length;
    });
    expect(coverage[0]).toBeLessThan(0.002);
    for (let i = 1; i < 4; i++) expect(coverage[i]!).toBeGreaterThan(coverage[i - 1]! * 2);
  });
});
