// Hashes as A1111/kohya compute them, checked against whole-buffer sha256 of the bytes they
// are defined on; and the size+mtime cache.
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { fileHashes, loraShortHash, modelShortHash } from '../../src/models/checkpoint/hash.ts';
import { writeSafetensors } from '../../src/tensor/safetensors.ts';
import { Tensor } from '../../src/tensor/tensor.ts';

const dir = mkdtempSync(join(tmpdir(), 'redline-hash-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

// ~5 MiB so the streamed hash crosses its 4 MiB read size and covers the legacy window.
const file = join(dir, 'big.safetensors');
const data = new Float32Array(1_300_000);
for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.37);
writeSafetensors(file, { 'lora_unet_x.lora_down.weight': new Tensor('f32', [1300, 1000], data) }, { ss_network_dim: '4' });
const bytes = readFileSync(file);
const headerEnd = 8 + Number(bytes.readBigUInt64LE(0));

describe('file hashes', () => {
  it('sha256 of the whole file; addnet = sha256 after the header; legacy = 64 KiB at 1 MiB', async () => {
    const h = await fileHashes(file, { cacheFile: null });
    expect(h.sha256).toBe(sha(bytes));
    expect(h.addnet).toBe(sha(bytes.subarray(headerEnd)));
    expect(h.legacy).toBe(sha(bytes.subarray(0x100000, 0x110000)).slice(0, 8));
    expect(modelShortHash(h)).toBe(sha(bytes).slice(0, 10));
    expect(loraShortHash(h)).toBe(sha(bytes.subarray(headerEnd)).slice(0, 12));
  });

  it('editing only the metadata changes the sha256 but not the addnet hash', async () => {
    const other = join(dir, 'meta.safetensors');
    writeSafetensors(other, { 'lora_unet_x.lora_down.weight': new Tensor('f32', [1300, 1000], data) }, { ss_network_dim: '4', note: 'edited' });
    const [a, b] = [await fileHashes(file, { cacheFile: null }), await fileHashes(other, { cacheFile: null })];
    expect(b.sha256).not.toBe(a.sha256);
    expect(b.addnet).toBe(a.addnet);
  });

  it('a non-safetensors file has no addnet hash', async () => {
    const p = join(dir, 'x.bin');
    writeFileSync(p, Buffer.from('PK\x03\x04 not safetensors'));
    const h = await fileHashes(p, { cacheFile: null });
    expect(h.addnet).toBeNull();
    expect(h.sha256).toBe(sha(readFileSync(p)));
  });

  it('the cache answers while size and mtime match, and recomputes after a change', async () => {
    const cacheFile = join(dir, 'cache', 'hashes.json');
    const p = join(dir, 'small.safetensors');
    writeSafetensors(p, { a: Tensor.f32([1, 2, 3]) });
    const first = await fileHashes(p, { cacheFile });
    expect(first.cached).toBe(false);
    const second = await fileHashes(p, { cacheFile });
    expect(second.cached).toBe(true);
    expect(second.sha256).toBe(first.sha256);
    writeSafetensors(p, { a: Tensor.f32([1, 2, 4]) });
    utimesSync(p, new Date(), new Date(Date.now() + 5000));
    const third = await fileHashes(p, { cacheFile });
    expect(third.cached).toBe(false);
    expect(third.sha256).toBe(sha(readFileSync(p)));
  });
});
