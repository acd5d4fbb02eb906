import { lookup as dnsLookup } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import sharp from 'sharp';
import { RedlineError } from '../errors.ts';

export interface UploadLimits {
  /** Largest decoded image file in bytes. */
  maxBytes: number;
  /** Largest width*height of an uploaded image. */
  maxPixels: number;
  /** Formats accepted (sharp metadata format names). */
  formats: readonly string[];
}

export const defaultUploadLimits: UploadLimits = {
  maxBytes: 8 * 1024 * 1024,
  maxPixels: 2048 * 2048,
  formats: ['png', 'jpeg', 'webp'],
};

const DATA_URL_RE = /^data:image\/[a-z0-9.+-]+;base64,/i;

/** Decodes an A1111-style image field (raw base64 or a data: URL) to bytes. */
export function decodeBase64Image(value: string, field: string, limits: UploadLimits): Buffer {
  const b64 = value.replace(DATA_URL_RE, '');
  // base64 grows 4/3; reject before decoding so a huge string costs no allocation.
  if ((b64.length * 3) / 4 > limits.maxBytes + 3) {
    throw new RedlineError('upload_too_large', `${field}: image is larger than ${limits.maxBytes} bytes.`);
  }
  if (!/^[A-Za-z0-9+/=\s_-]*$/.test(b64)) {
    throw new RedlineError('bad_image', `${field}: not base64 image data.`, 'Send a PNG, JPEG or WebP as base64 or a data:image/...;base64, URL.');
  }
  const bytes = Buffer.from(b64, 'base64');
  if (bytes.length === 0) throw new RedlineError('bad_image', `${field}: empty image.`);
  return bytes;
}

/**
 * Checks an uploaded image's real type and size from its header (sharp metadata, not the
 * name or MIME type the client claims) and re-encodes it to PNG, which also drops any
 * metadata and trailing payload it carried.
 */
export async function normaliseUpload(bytes: Buffer, field: string, limits: UploadLimits): Promise<Buffer> {
  if (bytes.length > limits.maxBytes) throw new RedlineError('upload_too_large', `${field}: image is larger than ${limits.maxBytes} bytes.`);
  let meta: Awaited<ReturnType<ReturnType<typeof sharp>['metadata']>>;
  try {
    // Header only: no pixel is decoded here, so the size can be judged before decoding.
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch {
    throw new RedlineError('bad_image', `${field}: not a readable image.`, `Accepted formats: ${limits.formats.join(', ')}.`);
  }
  if (!meta.format || !limits.formats.includes(meta.format)) {
    throw new RedlineError('bad_image_type', `${field}: image type '${meta.format ?? 'unknown'}' is not accepted.`, `Accepted formats: ${limits.formats.join(', ')}.`);
  }
  const pixels = (meta.width ?? 0) * (meta.height ?? 0);
  if (!pixels || pixels > limits.maxPixels) {
    throw new RedlineError('upload_too_many_pixels', `${field}: image is ${meta.width}x${meta.height}; at most ${limits.maxPixels} pixels are accepted.`);
  }
  return sharp(bytes, { limitInputPixels: limits.maxPixels }).png().toBuffer();
}

// Addresses an init-image URL may never reach: loopback, private, link-local (cloud
// metadata at 169.254.169.254), CGNAT, multicast, unspecified, and their IPv6 forms.
const blocked = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16],
  ['172.16.0.0', 12], ['192.0.0.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) blocked.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [['::', 128], ['::1', 128], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8], ['::ffff:0:0', 96], ['64:ff9b::', 96]] as const) {
  blocked.addSubnet(net, prefix, 'ipv6');
}

export function isPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return false;
  return !blocked.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

/** DNS lookup that fails for non-public addresses; used as the socket's resolver, so the
 * address checked is the address connected to (no DNS-rebinding gap). */
const publicOnlyLookup: LookupFunction = (hostname, options, callback) => {
  dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return (callback as (e: Error) => void)(err);
    const list = addresses as { address: string; family: number }[];
    const bad = list.find((a) => !isPublicAddress(a.address));
    if (bad || list.length === 0) {
      return (callback as (e: Error) => void)(new RedlineError('init_url_private', `init image URL host '${hostname}' resolves to a private or loopback address; refused.`));
    }
    if ((options as { all?: boolean }).all) return (callback as (e: null, a: typeof list) => void)(null, list);
    (callback as (e: null, a: string, f: number) => void)(null, list[0]!.address, list[0]!.family);
  });
};

/** Fetches an init image by URL (only when the operator enabled it), public hosts only. */
export function fetchInitImage(url: string, limits: UploadLimits, timeoutMs = 10_000): Promise<Buffer> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return Promise.reject(new RedlineError('bad_init_url', `'${url}' is not a URL.`));
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    return Promise.reject(new RedlineError('bad_init_url', `init image URLs must be http or https, not ${u.protocol}`));
  }
  const literal = u.hostname.replace(/^\[|\]$/g, '');
  if (isIP(literal) && !isPublicAddress(literal)) {
    return Promise.reject(new RedlineError('init_url_private', `init image URL host '${u.hostname}' is a private or loopback address; refused.`));
  }
  const mod = u.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.get(u, { lookup: publicOnlyLookup, timeout: timeoutMs, headers: { accept: 'image/*' } }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new RedlineError('init_url_failed', `init image URL answered HTTP ${res.statusCode}; redirects are not followed.`));
        return;
      }
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > limits.maxBytes) {
          req.destroy(new RedlineError('upload_too_large', `init image URL body is larger than ${limits.maxBytes} bytes.`));
          return;
        }
        chunks.push(c);
      });
      res.on('end', () => resolve(Buffer.concat(chunks)));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new RedlineError('init_url_timeout', 'init image URL did not answer in time.')));
    req.on('error', reject);
  });
}

/** Escapes text for HTML contexts (admin pages, placeholder studio page). */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"'`]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;', '`': '&#96;' })[c]!);
}

export const securityHeaders: Record<string, string> = {
  'Content-Security-Policy': "default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Permissions-Policy': 'camera=(), microphone=(), geolocation=()',
};
