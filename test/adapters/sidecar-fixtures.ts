// Procedurally written LoRA files and the broken calibration sidecars the registry must
// refuse. Tensor values come from a seeded generator; nothing is trained or downloaded.
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSafetensors } from '../../src/tensor/safetensors.ts';
import { randn, rng } from './helpers.ts';

/** A kohya-style LoRA on one SD 1.5 attention projection (rank 2), with optional metadata. */
export function writeTinyLora(path: string, metadata: Record<string, string> = {}, seed = 7): void {
  const r = rng(seed);
  const mod = 'lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q';
  writeSafetensors(path, { [`${mod}.lora_down.weight`]: randn([2, 8], r), [`${mod}.lora_up.weight`]: randn([8, 2], r) }, {
    ss_network_module: 'networks.lora', ss_network_dim: '2', ss_network_alpha: '2', ...metadata,
  });
}

export const VALID_GRADED_SIDECAR = { category: 'graphic-injury', intensity: { '1': 0.3, '2': 0.6, '3': 0.9 } };

/** Binary junk: a PNG signature, NULs and bytes that are not UTF-8. */
const JUNK = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0xff, 0xfe, 0xc3, 0x28, 0x7b, 0x22, 0x80, 0x81]);

/**
 * Each broken sidecar: how to write NAME.json beside NAME.safetensors, and a pattern the
 * refusal message must match (it names the problem).
 */
export const BROKEN_SIDECARS: ReadonlyArray<{ name: string; write(jsonPath: string): void; problem: RegExp }> = [
  {
    name: 'truncated',
    write: (p) => writeFileSync(p, JSON.stringify(VALID_GRADED_SIDECAR).slice(0, 31)),
    problem: /is not valid JSON/,
  },
  {
    name: 'wrongcategory',
    write: (p) => writeFileSync(p, JSON.stringify({ category: 42, intensity: VALID_GRADED_SIDECAR.intensity })),
    problem: /is invalid: sidecar category must be/,
  },
  {
    name: 'stringlevels',
    write: (p) => writeFileSync(p, JSON.stringify({ category: 'graphic-injury', intensity: { '1': '0.3', '2': '0.6', '3': '0.9' } })),
    problem: /is invalid: sidecar intensity level "1" needs a strength/,
  },
  {
    name: 'intensitylist',
    write: (p) => writeFileSync(p, JSON.stringify({ category: 'graphic-injury', intensity: [0.3, 0.6, 0.9] })),
    problem: /is invalid: sidecar intensity must map level names to strengths/,
  },
  {
    name: 'notobject',
    write: (p) => writeFileSync(p, JSON.stringify(['graphic-injury'])),
    problem: /is invalid: sidecar is not a JSON object/,
  },
  {
    // valid JSON padded past the 64 KiB limit: refused for its size alone
    name: 'oversize',
    write: (p) => writeFileSync(p, `${JSON.stringify(VALID_GRADED_SIDECAR)}${' '.repeat(64 * 1024)}`),
    problem: /is \d+ bytes, over the 65536-byte limit/,
  },
  {
    name: 'junk',
    write: (p) => writeFileSync(p, JUNK),
    problem: /is not UTF-8 text/,
  },
  {
    name: 'folder',
    write: (p) => mkdirSync(p),
    problem: /is not a regular file/,
  },
  {
    name: 'dangling',
    write: (p) => symlinkSync(`${p}.gone`, p),
    problem: /is a symbolic link to a file that does not exist/,
  },
];

/** Writes `dir`/NAME.safetensors and, unless `sidecar` is undefined, NAME.json holding it as
 * JSON; returns the adapter's path. */
export function writeAdapter(dir: string, name: string, sidecar?: unknown, metadata: Record<string, string> = {}): string {
  const path = join(dir, `${name}.safetensors`);
  writeTinyLora(path, metadata);
  if (sidecar !== undefined) writeFileSync(join(dir, `${name}.json`), JSON.stringify(sidecar));
  return path;
}

/** Writes NAME.safetensors + the broken NAME.json for every case (all by default) into `dir`. */
export function writeBrokenAdapters(dir: string, cases: typeof BROKEN_SIDECARS = BROKEN_SIDECARS): void {
  for (const c of cases) {
    writeTinyLora(join(dir, `${c.name}.safetensors`));
    c.write(join(dir, `${c.name}.json`));
  }
}
