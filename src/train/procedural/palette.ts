// The colour vocabulary of procedural scenes. Values are far apart in RGB so that a
// generated image's colours can be classified back to names by nearest neighbour.
export const COLORS = {
  red: [220, 40, 40],
  green: [40, 170, 60],
  blue: [40, 80, 220],
  yellow: [240, 220, 40],
  orange: [245, 140, 30],
  purple: [140, 60, 190],
  pink: [245, 150, 200],
  cyan: [60, 210, 220],
  white: [245, 245, 245],
  black: [25, 25, 25],
  gray: [128, 128, 128],
  brown: [130, 80, 40],
} as const satisfies Record<string, readonly [number, number, number]>;

export type ColorName = keyof typeof COLORS;
export const COLOR_NAMES = Object.keys(COLORS) as ColorName[];
export type RGB = readonly [number, number, number];

/** The demo adapter's paint colour: a dark crimson no scene object or background uses. */
export const SPLATTER_RGB: RGB = [120, 0, 12];

export function nearestColor(r: number, g: number, b: number): ColorName {
  let best: ColorName = 'black';
  let bestD = Infinity;
  for (const name of COLOR_NAMES) {
    const c = COLORS[name];
    const d = (r - c[0]) ** 2 + (g - c[1]) ** 2 + (b - c[2]) ** 2;
    if (d < bestD) {
      bestD = d;
      best = name;
    }
  }
  return best;
}

/** A tint of a colour towards white (t > 0) or black (t < 0), for textures. */
export function tint(c: RGB, t: number): RGB {
  const target = t > 0 ? 255 : 0;
  const a = Math.abs(t);
  return [c[0] + (target - c[0]) * a, c[1] + (target - c[1]) * a, c[2] + (target - c[2]) * a].map(Math.round) as unknown as RGB;
}
