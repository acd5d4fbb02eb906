import { createHash, randomBytes, randomInt, scrypt as scryptCb, timingSafeEqual } from 'node:crypto';
import { promisify } from 'node:util';
import { crc32 } from 'node:zlib';

// API key format: `rl_` + 12-char public id + 32-char secret + 6-char checksum, all base62.
// The public id is the lookup key; only sha256(secret) is stored. The secret carries ~190
// bits of randomness, so a fast hash is enough (slow hashes protect low-entropy passwords,
// which is what scrypt is used for below). The CRC32 checksum lets the server reject a
// mistyped or truncated key before any database lookup, as GitHub's token format does.
const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
export const KEY_PREFIX = 'rl_';
const ID_LEN = 12;
const SECRET_LEN = 32;
const CHECK_LEN = 6;
const KEY_RE = new RegExp(`^${KEY_PREFIX}([0-9A-Za-z]{${ID_LEN}})([0-9A-Za-z]{${SECRET_LEN}})([0-9A-Za-z]{${CHECK_LEN}})$`);

function randomBase62(n: number): string {
  let out = '';
  for (let i = 0; i < n; i++) out += ALPHABET[randomInt(62)];
  return out;
}

function base62Fixed(value: number, width: number): string {
  let out = '';
  let v = value;
  for (let i = 0; i < width; i++) {
    out = ALPHABET[v % 62] + out;
    v = Math.floor(v / 62);
  }
  return out;
}

function checksum(body: string): string {
  return base62Fixed(crc32(body) >>> 0, CHECK_LEN);
}

export interface NewKey {
  id: string;
  key: string;
  secretHash: string;
}

export function generateKey(): NewKey {
  const id = randomBase62(ID_LEN);
  const secret = randomBase62(SECRET_LEN);
  const body = `${KEY_PREFIX}${id}${secret}`;
  return { id, key: body + checksum(body), secretHash: hashSecret(secret) };
}

export type ParsedKey = { ok: true; id: string; secret: string } | { ok: false; reason: string };

export function parseKey(key: string): ParsedKey {
  if (!key.startsWith(KEY_PREFIX)) return { ok: false, reason: `API keys start with '${KEY_PREFIX}'` };
  const m = KEY_RE.exec(key);
  if (!m) return { ok: false, reason: `API key has the wrong length or characters (expected ${KEY_PREFIX.length + ID_LEN + SECRET_LEN + CHECK_LEN})` };
  const [, id, secret, check] = m as unknown as [string, string, string, string];
  if (checksum(`${KEY_PREFIX}${id}${secret}`) !== check) return { ok: false, reason: 'API key checksum does not match (mistyped or truncated key)' };
  return { ok: true, id, secret };
}

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export function secretMatches(secret: string, storedHash: string): boolean {
  const a = Buffer.from(hashSecret(secret), 'hex');
  const b = Buffer.from(storedHash, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

const scrypt = promisify(scryptCb) as (pw: string, salt: Buffer, len: number, opts: { N: number; r: number; p: number }) => Promise<Buffer>;
const SCRYPT = { N: 16384, r: 8, p: 1 };

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scrypt(password, salt, 32, SCRYPT);
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [, n, r, p, saltB64, hashB64] = parts as [string, string, string, string, string, string];
  const expected = Buffer.from(hashB64, 'base64');
  const got = await scrypt(password, Buffer.from(saltB64, 'base64'), expected.length, { N: Number(n), r: Number(r), p: Number(p) });
  return timingSafeEqual(got, expected);
}

export function randomToken(bytes = 32): string {
  return randomBytes(bytes).toString('base64url');
}
