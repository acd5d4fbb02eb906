// Procedural test images (gradients and flat shapes) rendered with sharp: nothing real.
import sharp from 'sharp';

export async function gradientPng(width = 512, height = 512): Promise<Buffer> {
  const data = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = (y * width + x) * 3;
      data[p] = Math.round((x * 255) / (width - 1));
      data[p + 1] = Math.round((y * 255) / (height - 1));
      data[p + 2] = Math.round(128 + 90 * Math.sin(x / 41 + y / 67));
    }
  }
  return sharp(data, { raw: { width, height, channels: 3 } }).png().toBuffer();
}

export async function shapesPng(width = 512, height = 512): Promise<Buffer> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">
    <defs><radialGradient id="g"><stop offset="0" stop-color="#c85a32"/><stop offset="1" stop-color="#23305a"/></radialGradient></defs>
    <rect width="100%" height="100%" fill="url(#g)"/>
    <circle cx="${width * 0.35}" cy="${height * 0.4}" r="${width * 0.18}" fill="#e8c070"/>
    <rect x="${width * 0.5}" y="${height * 0.55}" width="${width * 0.35}" height="${height * 0.27}" fill="#3a8a50" transform="rotate(15 ${width * 0.68} ${height * 0.68})"/>
    <polygon points="${width * 0.1},${height * 0.9} ${width * 0.4},${height * 0.65} ${width * 0.58},${height * 0.95}" fill="#7040a0"/>
  </svg>`;
  return sharp(Buffer.from(svg)).png().toBuffer();
}

export async function rgbPixels(image: Uint8Array): Promise<{ data: Uint8Array; width: number; height: number; channels: number }> {
  const { data, info } = await sharp(image).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data), width: info.width, height: info.height, channels: info.channels };
}
