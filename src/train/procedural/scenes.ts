// Procedural scenes: the project's only training and demo imagery. Each scene is drawn
// from a spec, and its caption is written from the same spec, so a caption states
// properties (colour, shape, size, position, background) that analyzeScene() can check
// on any image, generated or drawn. Nothing here is collected: everything is code.
import { COLOR_NAMES, COLORS, type ColorName, nearestColor, type RGB, SPLATTER_RGB, tint } from './palette.ts';
import { SeededRandom } from './random.ts';

export const SHAPES = ['circle', 'square', 'triangle', 'diamond', 'star', 'ring', 'cross', 'house', 'tree'] as const;
export type ShapeName = (typeof SHAPES)[number];
export const POSITIONS = ['center', 'left', 'right', 'top', 'bottom'] as const;
export type PositionName = (typeof POSITIONS)[number];
export const SIZES = ['small', 'large'] as const;
export type SizeName = (typeof SIZES)[number];
export const BACKGROUNDS = ['plain', 'gradient', 'striped', 'checkered', 'dotted'] as const;
export type BackgroundKind = (typeof BACKGROUNDS)[number];
export type SplatterLevel = 0 | 1 | 2 | 3;

export interface SceneSpec {
  shape: ShapeName;
  color: ColorName;
  size: SizeName;
  position: PositionName;
  background: BackgroundKind;
  backgroundColor: ColorName;
  /** Demo adapter: amount of procedurally drawn red paint splatter, 0 (none) to 3. */
  splatter: SplatterLevel;
  /** Seeds the jitter of placement, texture phase and splatter. */
  seed: number;
}

/** Colours an object may take (a tree is always green, its trunk brown). */
const OBJECT_COLORS: readonly ColorName[] = COLOR_NAMES.filter((c) => c !== 'brown' && c !== 'gray');
const BACKGROUND_COLORS: readonly ColorName[] = ['white', 'black', 'gray', 'blue', 'yellow', 'green', 'pink', 'cyan', 'purple', 'orange'];

const POSITION_PHRASE: Record<PositionName, string> = {
  center: 'in the center',
  left: 'on the left',
  right: 'on the right',
  top: 'at the top',
  bottom: 'at the bottom',
};

export function sampleScene(rng: SeededRandom, splatter: SplatterLevel = 0): SceneSpec {
  const shape = rng.pick(SHAPES);
  const color: ColorName = shape === 'tree' ? 'green' : rng.pick(OBJECT_COLORS);
  let backgroundColor = rng.pick(BACKGROUND_COLORS);
  // the object must stand out from its background, also under the classifier's eye
  while (backgroundColor === color) backgroundColor = rng.pick(BACKGROUND_COLORS);
  return {
    shape,
    color,
    size: rng.pick(SIZES),
    position: rng.pick(POSITIONS),
    background: rng.pick(BACKGROUNDS),
    backgroundColor,
    splatter,
    seed: rng.int(0, 2 ** 31),
  };
}

export function captionOf(spec: SceneSpec, { intensityTag = false, describeSplatter = true } = {}): string {
  const bg = spec.background === 'plain' ? spec.backgroundColor : `${spec.backgroundColor} ${spec.background}`;
  let text = `a ${spec.size} ${spec.color} ${spec.shape} ${POSITION_PHRASE[spec.position]}, ${bg} background`;
  if (spec.splatter > 0 && describeSplatter) text += `, ${['', 'a few', 'some', 'heavy'][spec.splatter]} red paint splatter`;
  if (intensityTag) text += `, intensity:${spec.splatter}`;
  return text;
}

/** Parses a caption written by captionOf (used by the evaluation of held-out captions). */
export function parseCaption(caption: string): Omit<SceneSpec, 'seed' | 'splatter'> | null {
  const m = /^a (small|large) (\w+) (\w+) (in the center|on the left|on the right|at the top|at the bottom), (\w+)(?: (\w+))? background/.exec(
    caption.trim(),
  );
  if (!m) return null;
  const position = (Object.keys(POSITION_PHRASE) as PositionName[]).find((p) => POSITION_PHRASE[p] === m[4])!;
  return {
    size: m[1] as SizeName,
    color: m[2] as ColorName,
    shape: m[3] as ShapeName,
    position,
    backgroundColor: m[5] as ColorName,
    background: (m[6] ?? 'plain') as BackgroundKind,
  };
}

// ---- geometry: every shape fills the box [-1, 1]^2 of its own coordinates (u right, v down)

const STAR: Array<[number, number]> = Array.from({ length: 10 }, (_, i) => {
  const a = -Math.PI / 2 + (i * Math.PI) / 5;
  const r = i % 2 === 0 ? 1 : 0.42;
  return [r * Math.cos(a), r * Math.sin(a) * 1.05 + 0.05];
});

function insidePolygon(u: number, v: number, poly: Array<[number, number]>): boolean {
  let inside = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i]!;
    const [xj, yj] = poly[j]!;
    if (yi > v !== yj > v && u < ((xj - xi) * (v - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

/** Which part of a shape covers (u, v): 0 outside, 1 main colour, 2 secondary (trunk, door). */
export function shapeCoverage(shape: ShapeName, u: number, v: number): 0 | 1 | 2 {
  if (u < -1 || u > 1 || v < -1 || v > 1) return 0;
  switch (shape) {
    case 'circle': return u * u + v * v <= 1 ? 1 : 0;
    case 'square': return 1;
    case 'triangle': return Math.abs(u) <= (v + 1) / 2 ? 1 : 0;
    case 'diamond': return Math.abs(u) + Math.abs(v) <= 1 ? 1 : 0;
    case 'star': return insidePolygon(u, v, STAR) ? 1 : 0;
    case 'ring': {
      const r2 = u * u + v * v;
      return r2 <= 1 && r2 >= 0.3 ? 1 : 0;
    }
    case 'cross': return Math.abs(u) <= 0.34 || Math.abs(v) <= 0.34 ? 1 : 0;
    case 'house': {
      if (v >= -0.15) {
        if (Math.abs(u) > 0.8) return 0;
        return Math.abs(u) < 0.2 && v > 0.45 ? 2 : 1; // door
      }
      return Math.abs(u) <= (v + 1) / 0.85 ? 1 : 0; // roof
    }
    case 'tree': {
      if (v > 0.35) return Math.abs(u) <= 0.18 ? 2 : 0; // trunk
      const cv = (v + 0.3) / 0.68;
      return u * u + cv * cv <= 1 ? 1 : 0; // crown
    }
  }
}

export interface SceneLayout {
  cx: number;
  cy: number;
  half: number;
}

export function layoutOf(spec: SceneSpec, width: number, height: number): SceneLayout {
  const rng = new SeededRandom(spec.seed ^ 0x5eed);
  const s = Math.min(width, height);
  const half = (spec.size === 'large' ? 0.22 : 0.13) * s * rng.range(0.94, 1.06);
  // large objects at the edge positions stay clear of the border, so the border is background
  const off = 0.28;
  const [fx, fy] = {
    center: [0.5, 0.5],
    left: [off, 0.5],
    right: [1 - off, 0.5],
    top: [0.5, off],
    bottom: [0.5, 1 - off],
  }[spec.position];
  const j = 0.03 * s;
  return { cx: fx * width + rng.range(-j, j), cy: fy * height + rng.range(-j, j), half };
}

function backgroundAt(spec: SceneSpec, x: number, y: number, w: number, h: number, phase: number): RGB {
  const base = COLORS[spec.backgroundColor];
  const alt = tint(base, spec.backgroundColor === 'white' ? -0.12 : spec.backgroundColor === 'black' ? 0.15 : 0.18);
  switch (spec.background) {
    case 'plain': return base;
    case 'gradient': {
      const t = (y / h) * 0.9;
      return [base[0] + (alt[0] - base[0]) * t, base[1] + (alt[1] - base[1]) * t, base[2] + (alt[2] - base[2]) * t];
    }
    case 'striped': return Math.floor((x + y + phase) / (w / 10)) % 2 === 0 ? base : alt;
    case 'checkered': return (Math.floor((x + phase) / (w / 8)) + Math.floor(y / (h / 8))) % 2 === 0 ? base : alt;
    case 'dotted': {
      const p = w / 9;
      const dx = ((x + phase) % p) - p / 2;
      const dy = (y % p) - p / 2;
      return dx * dx + dy * dy < (p * 0.22) ** 2 ? alt : base;
    }
  }
}

/** Blobs of paint: a few large splats with droplets flung around them, graded by level. */
function splatterMask(spec: SceneSpec, w: number, h: number): Uint8Array {
  const mask = new Uint8Array(w * h);
  if (spec.splatter === 0) return mask;
  const rng = new SeededRandom(spec.seed ^ 0xb100d);
  const s = Math.min(w, h);
  const splats = [0, 2, 4, 7][spec.splatter]!;
  const scale = [0, 0.045, 0.065, 0.09][spec.splatter]!;
  const blob = (cx: number, cy: number, r: number, wobble: number, k: number, ph: number): void => {
    const x0 = Math.max(0, Math.floor(cx - r * 1.4));
    const x1 = Math.min(w - 1, Math.ceil(cx + r * 1.4));
    const y0 = Math.max(0, Math.floor(cy - r * 1.4));
    const y1 = Math.min(h - 1, Math.ceil(cy + r * 1.4));
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const dx = x + 0.5 - cx;
        const dy = y + 0.5 - cy;
        const a = Math.atan2(dy, dx);
        const rr = r * (1 + wobble * Math.sin(k * a + ph) + wobble * 0.5 * Math.sin((k + 3) * a + 2 * ph));
        if (dx * dx + dy * dy <= rr * rr) mask[y * w + x] = 1;
      }
    }
  };
  for (let i = 0; i < splats; i++) {
    const cx = rng.range(0.1, 0.9) * w;
    const cy = rng.range(0.1, 0.9) * h;
    const r = scale * s * rng.range(0.7, 1.3);
    blob(cx, cy, r, 0.25, rng.int(5, 9), rng.range(0, 6.28));
    const drops = rng.int(4, 10);
    for (let d = 0; d < drops; d++) {
      const a = rng.range(0, Math.PI * 2);
      const dist = r * rng.range(1.2, 2.6);
      blob(cx + Math.cos(a) * dist, cy + Math.sin(a) * dist, r * rng.range(0.1, 0.3), 0.1, 3, 0);
    }
  }
  return mask;
}

/** Renders a scene as interleaved RGB bytes (HWC), 2x2 supersampled for clean edges. */
export function renderScene(spec: SceneSpec, width = 128, height = 128): Uint8Array {
  const out = new Uint8Array(width * height * 3);
  const { cx, cy, half } = layoutOf(spec, width, height);
  const main = COLORS[spec.color];
  const secondary: RGB = spec.shape === 'tree' ? COLORS.brown : tint(main, -0.45);
  const phase = new SeededRandom(spec.seed).range(0, width);
  const paint = splatterMask(spec, width, height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let r = 0;
      let g = 0;
      let b = 0;
      for (let sy = 0; sy < 2; sy++) {
        for (let sx = 0; sx < 2; sx++) {
          const px = x + 0.25 + sx * 0.5;
          const py = y + 0.25 + sy * 0.5;
          const part = shapeCoverage(spec.shape, (px - cx) / half, (py - cy) / half);
          const c = part === 1 ? main : part === 2 ? secondary : backgroundAt(spec, px, py, width, height, phase);
          r += c[0];
          g += c[1];
          b += c[2];
        }
      }
      const o = (y * width + x) * 3;
      if (paint[y * width + x]) {
        out[o] = SPLATTER_RGB[0];
        out[o + 1] = SPLATTER_RGB[1];
        out[o + 2] = SPLATTER_RGB[2];
      } else {
        out[o] = Math.round(r / 4);
        out[o + 1] = Math.round(g / 4);
        out[o + 2] = Math.round(b / 4);
      }
    }
  }
  return out;
}

// ---- analysis: the scene generator's own rules, applied to any RGB image

export interface SceneAnalysis {
  color: ColorName | null;
  shape: ShapeName | null;
  position: PositionName | null;
  /** Fraction of pixels that are splatter paint. */
  splatterCoverage: number;
  /** Fraction of pixels of the detected object colour. */
  objectFraction: number;
}

const SPLATTER_CLASS = 255;

function classify(rgb: Uint8Array, n: number): Uint8Array {
  const cls = new Uint8Array(n);
  const [sr, sg, sb] = SPLATTER_RGB;
  for (let i = 0; i < n; i++) {
    const r = rgb[i * 3]!;
    const g = rgb[i * 3 + 1]!;
    const b = rgb[i * 3 + 2]!;
    const ds = (r - sr) ** 2 + (g - sg) ** 2 + (b - sb) ** 2;
    if (ds < 40 ** 2) {
      cls[i] = SPLATTER_CLASS;
      continue;
    }
    cls[i] = COLOR_NAMES.indexOf(nearestColor(r, g, b));
  }
  return cls;
}

export function analyzeScene(rgb: Uint8Array, width: number, height: number): SceneAnalysis {
  const n = width * height;
  const cls = classify(rgb, n);
  let splat = 0;
  for (let i = 0; i < n; i++) if (cls[i] === SPLATTER_CLASS) splat++;
  // Background = colour classes that cover a large share of the image border (objects
  // touch the border little; textures made of tints may classify as two classes).
  const border = new Map<number, number>();
  let borderCount = 0;
  const countBorder = (i: number): void => {
    border.set(cls[i]!, (border.get(cls[i]!) ?? 0) + 1);
    borderCount++;
  };
  for (let x = 0; x < width; x++) {
    countBorder(x);
    countBorder((height - 1) * width + x);
  }
  for (let y = 1; y < height - 1; y++) {
    countBorder(y * width);
    countBorder(y * width + width - 1);
  }
  const background = new Set<number>([SPLATTER_CLASS]);
  for (const [c, k] of border) if (k / borderCount >= 0.12) background.add(c);
  const counts = new Map<number, number>();
  for (let i = 0; i < n; i++) if (!background.has(cls[i]!)) counts.set(cls[i]!, (counts.get(cls[i]!) ?? 0) + 1);
  let objectClass = -1;
  let objectCount = 0;
  for (const [c, k] of counts) if (k > objectCount) [objectClass, objectCount] = [c, k];
  const result: SceneAnalysis = { color: null, shape: null, position: null, splatterCoverage: splat / n, objectFraction: objectCount / n };
  if (objectClass < 0 || objectCount < n * 0.004) return result;
  result.color = COLOR_NAMES[objectClass]!;

  let sx = 0;
  let sy = 0;
  const xs: number[] = [];
  const ys: number[] = [];
  for (let i = 0; i < n; i++) {
    if (cls[i] !== objectClass) continue;
    const x = i % width;
    const y = (i - x) / width;
    sx += x;
    sy += y;
    xs.push(x);
    ys.push(y);
  }
  const dx = (sx / objectCount + 0.5) / width - 0.5;
  const dy = (sy / objectCount + 0.5) / height - 0.5;
  result.position = Math.max(Math.abs(dx), Math.abs(dy)) < 0.11 ? 'center' : Math.abs(dx) > Math.abs(dy) ? (dx < 0 ? 'left' : 'right') : dy < 0 ? 'top' : 'bottom';

  // Shape: fit each template to the mask's robust bounding box and keep the best IoU.
  xs.sort((a, b) => a - b);
  ys.sort((a, b) => a - b);
  const q = (arr: number[], p: number): number => arr[Math.min(arr.length - 1, Math.floor(p * arr.length))]!;
  // tight quantiles: pointed tips (star, diamond, roof) are thin and must stay in the box
  const x0 = q(xs, 0.002);
  const x1 = q(xs, 0.998) + 1;
  const y0 = q(ys, 0.002);
  const y1 = q(ys, 0.998) + 1;
  let bestIou = -1;
  for (const shape of SHAPES) {
    // The templates' main part spans a known fraction of their box; map the mask's box onto it.
    const box = mainPartBox(shape);
    const hw = (x1 - x0) / (box.u1 - box.u0);
    const hh = (y1 - y0) / (box.v1 - box.v0);
    const ox = x0 - box.u0 * hw;
    const oy = y0 - box.v0 * hh;
    let inter = 0;
    let uni = 0;
    let secondary = 0;
    let secondaryPresent = 0;
    const gx0 = Math.max(0, Math.floor(ox - hw));
    const gx1 = Math.min(width, Math.ceil(ox + hw));
    const gy0 = Math.max(0, Math.floor(oy - hh));
    const gy1 = Math.min(height, Math.ceil(oy + hh));
    let outsideMask = objectCount;
    for (let y = gy0; y < gy1; y++) {
      for (let x = gx0; x < gx1; x++) {
        const c = cls[y * width + x]!;
        const m = c === objectClass;
        const u = (x + 0.5 - ox) / hw;
        const v = (y + 0.5 - oy) / hh;
        const part = shapeCoverage(shape, u, v);
        if (m) outsideMask--;
        if (part === 2) {
          // A secondary part (trunk, door) must be there in some other, non-background
          // colour. Its edge pixels blend with the background, so only its core counts.
          const du = 1 / hw;
          const dv = 1 / hh;
          const core =
            shapeCoverage(shape, u - du, v) === 2 && shapeCoverage(shape, u + du, v) === 2 &&
            shapeCoverage(shape, u, v - dv) === 2 && shapeCoverage(shape, u, v + dv) === 2;
          if (core) {
            secondary++;
            if (!m && !background.has(c)) secondaryPresent++;
          }
          continue;
        }
        const t = part === 1;
        if (m && t) inter++;
        if (m || t) uni++;
      }
    }
    let iou = inter / (uni + outsideMask);
    // The main parts of a tree and a circle look alike: the secondary part decides.
    if (secondary > 0) iou += 0.1 * (2 * (secondaryPresent / secondary) - 1);
    if (iou > bestIou) {
      bestIou = iou;
      result.shape = shape;
    }
  }
  return result;
}

const partBoxes = new Map<ShapeName, { u0: number; u1: number; v0: number; v1: number }>();
/** Extent of a shape's main-colour part in template coordinates, computed once by sampling. */
function mainPartBox(shape: ShapeName): { u0: number; u1: number; v0: number; v1: number } {
  let box = partBoxes.get(shape);
  if (!box) {
    box = { u0: 1, u1: -1, v0: 1, v1: -1 };
    const steps = 200;
    for (let i = 0; i <= steps; i++) {
      for (let j = 0; j <= steps; j++) {
        const u = -1 + (2 * i) / steps;
        const v = -1 + (2 * j) / steps;
        if (shapeCoverage(shape, u, v) !== 1) continue;
        box.u0 = Math.min(box.u0, u);
        box.u1 = Math.max(box.u1, u);
        box.v0 = Math.min(box.v0, v);
        box.v1 = Math.max(box.v1, v);
      }
    }
    partBoxes.set(shape, box);
  }
  return box;
}
