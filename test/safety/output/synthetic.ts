// Test images made by code only: flat colours, gradients, shapes and a cartoon face drawn
// from an SVG (which the face detector finds). No photographs of anyone.
import sharp from 'sharp';
import type { RgbImage } from '../../../src/safety/output/image.ts';

export async function rasterize(svg: string): Promise<RgbImage> {
  const { data, info } = await sharp(Buffer.from(svg)).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
}

export async function toPng(image: RgbImage): Promise<Buffer> {
  return sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } }).png().toBuffer();
}

export function flatColour(width: number, height: number, rgb: [number, number, number]): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) data.set(rgb, i * 3);
  return { data, width, height };
}

/** Horizontal red ramp, vertical green ramp, constant blue. */
export function gradient(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      data[i] = Math.round((255 * x) / (width - 1));
      data[i + 1] = Math.round((255 * y) / (height - 1));
      data[i + 2] = 96;
    }
  }
  return { data, width, height };
}

/** Black and white squares of `cell` pixels: the most high-frequency content a blur can remove. */
export function checkerboard(width: number, height: number, cell: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      data.fill(((x / cell) ^ (y / cell)) & 1 ? 255 : 0, (y * width + x) * 3, (y * width + x) * 3 + 3);
    }
  }
  return { data, width, height };
}

export function shapesSvg(size = 512): string {
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}">
  <rect width="${size}" height="${size}" fill="#e8e2d0"/>
  <circle cx="${size * 0.3}" cy="${size * 0.35}" r="${size * 0.18}" fill="#c0392b"/>
  <rect x="${size * 0.5}" y="${size * 0.45}" width="${size * 0.35}" height="${size * 0.3}" fill="#2c3e50"/>
  <polygon points="${size * 0.1},${size * 0.9} ${size * 0.4},${size * 0.55} ${size * 0.6},${size * 0.9}" fill="#27ae60"/>
  </svg>`;
}

/** Geometry and colours of a cartoon face; two different parameter sets are two "people". */
export interface FaceParams {
  skin: string;
  hair: string;
  background: string;
  eyeSpacing: number;
  eyeWidth: number;
  faceWidth: number;
  faceHeight: number;
  noseLength: number;
  mouthWidth: number;
  mouthY: number;
  /** Moves the whole face (pixels), to show a match does not depend on position. */
  dx: number;
  dy: number;
}

export const PERSON_A: FaceParams = {
  skin: '#e0ac8a', hair: '#3a2414', background: '#7fa7c9', eyeSpacing: 52, eyeWidth: 30,
  faceWidth: 120, faceHeight: 160, noseLength: 65, mouthWidth: 41, mouthY: 330, dx: 0, dy: 0,
};

export const PERSON_B: FaceParams = {
  skin: '#f1c9a5', hair: '#c9a14a', background: '#7fa7c9', eyeSpacing: 40, eyeWidth: 22,
  faceWidth: 100, faceHeight: 175, noseLength: 45, mouthWidth: 30, mouthY: 345, dx: 0, dy: 0,
};

export function faceSvg(p: FaceParams, size = 512): string {
  const cx = 256 + p.dx;
  const cy = 250 + p.dy;
  const eyeY = cy - 30;
  const el = cx - p.eyeSpacing;
  const er = cx + p.eyeSpacing;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${size}" height="${size}" viewBox="0 0 512 512">
  <defs>
    <radialGradient id="skin" cx="50%" cy="40%" r="60%"><stop offset="0%" stop-color="${p.skin}"/><stop offset="100%" stop-color="#9a6a4d"/></radialGradient>
    <radialGradient id="bg" cx="50%" cy="50%" r="70%"><stop offset="0%" stop-color="${p.background}"/><stop offset="100%" stop-color="#223"/></radialGradient>
  </defs>
  <rect width="512" height="512" fill="url(#bg)"/>
  <rect x="${cx - 60}" y="${cy + 130}" width="120" height="200" fill="url(#skin)"/>
  <ellipse cx="${cx}" cy="${cy - 100}" rx="${p.faceWidth + 18}" ry="${p.faceHeight - 60}" fill="${p.hair}"/>
  <ellipse cx="${cx}" cy="${cy}" rx="${p.faceWidth}" ry="${p.faceHeight}" fill="url(#skin)"/>
  <ellipse cx="${el}" cy="${eyeY}" rx="${p.eyeWidth}" ry="13" fill="#fff"/><ellipse cx="${er}" cy="${eyeY}" rx="${p.eyeWidth}" ry="13" fill="#fff"/>
  <circle cx="${el}" cy="${eyeY}" r="11" fill="#3b2a1a"/><circle cx="${er}" cy="${eyeY}" r="11" fill="#3b2a1a"/>
  <circle cx="${el}" cy="${eyeY}" r="5" fill="#000"/><circle cx="${er}" cy="${eyeY}" r="5" fill="#000"/>
  <path d="M ${el - 32} ${eyeY - 28} Q ${el} ${eyeY - 42} ${el + 32} ${eyeY - 30}" stroke="${p.hair}" stroke-width="8" fill="none"/>
  <path d="M ${er - 32} ${eyeY - 30} Q ${er} ${eyeY - 42} ${er + 32} ${eyeY - 28}" stroke="${p.hair}" stroke-width="8" fill="none"/>
  <path d="M ${cx} ${eyeY + 5} L ${cx - 16} ${eyeY + 5 + p.noseLength} Q ${cx} ${eyeY + 15 + p.noseLength} ${cx + 16} ${eyeY + 5 + p.noseLength} Z" fill="#b07a5a"/>
  <path d="M ${cx - p.mouthWidth} ${p.mouthY + p.dy} Q ${cx} ${p.mouthY + p.dy + 25} ${cx + p.mouthWidth} ${p.mouthY + p.dy} Q ${cx} ${p.mouthY + p.dy + 12} ${cx - p.mouthWidth} ${p.mouthY + p.dy} Z" fill="#a0404a"/>
  </svg>`;
}

export function renderFace(p: FaceParams, size = 512): Promise<RgbImage> {
  return rasterize(faceSvg(p, size));
}
