// What checkpoints a models folder holds: single files and diffusers folders, with family,
// A1111 hash and size, read from headers and configs only (plus a cached hash pass).
import { existsSync, lstatSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, extname, join, relative } from 'node:path';
import { RedlineError } from '../../errors.ts';
import { SafetensorsFile } from '../../tensor/safetensors.ts';
import { type CheckpointKind, classifyKeys, type ModelFamily, sniffFileKind } from './detect.ts';
import { fileHashes, modelShortHash } from './hash.ts';

export interface ModelListing {
  /** Path relative to the listed folder. */
  path: string;
  format: 'single-file' | 'diffusers' | 'pickle';
  kind: CheckpointKind;
  family: ModelFamily;
  /** Bytes of weights (all component files for a folder). */
  size: number;
  /** A1111 "Model hash" (10 hex) and the full sha256; single files only. */
  hash: { short: string; sha256: string } | null;
  /** Redline can load it as a model. */
  usable: boolean;
  note?: string;
}

function folderFamily(dir: string): ModelFamily {
  try {
    const idx = JSON.parse(readFileSync(join(dir, 'model_index.json'), 'utf8')) as { _class_name?: string };
    const cls = String(idx._class_name ?? '');
    if (/XL/.test(cls)) return 'sdxl';
    if (/StableDiffusion3/.test(cls)) return 'sd3';
    if (/Flux/.test(cls)) return 'flux';
    const unetCfg = join(dir, 'unet', 'config.json');
    if (existsSync(unetCfg)) {
      const u = JSON.parse(readFileSync(unetCfg, 'utf8')) as { cross_attention_dim?: number; addition_embed_type?: string };
      if (u.addition_embed_type === 'text_time') return 'sdxl';
      if (u.cross_attention_dim === 1024) return 'sd2';
      if (u.cross_attention_dim === 768 || cls.startsWith('StableDiffusion')) return 'sd1';
    }
  } catch {
    return 'unknown';
  }
  return 'unknown';
}

function folderSize(dir: string): number {
  let n = 0;
  for (const c of ['unet', 'vae', 'text_encoder']) {
    const d = join(dir, c);
    if (!existsSync(d)) continue;
    for (const f of readdirSync(d)) if (f.endsWith('.safetensors')) n += statSync(join(d, f)).size;
  }
  return n;
}

export async function listModels(dir: string, opts: { hashes?: boolean; cacheFile?: string | null } = {}): Promise<ModelListing[]> {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new RedlineError('dir_not_found', `${dir} is not a folder.`);
  const out: ModelListing[] = [];
  const walk = async (d: string, depth: number): Promise<void> => {
    for (const name of readdirSync(d).sort()) {
      if (name.startsWith('.')) continue;
      const p = join(d, name);
      const ls = lstatSync(p);
      const rel = relative(dir, p);
      if (ls.isDirectory()) {
        if (existsSync(join(p, 'model_index.json'))) {
          const family = folderFamily(p);
          out.push({ path: rel, format: 'diffusers', kind: 'checkpoint', family, size: folderSize(p), hash: null, usable: family === 'sd1' });
        } else if (depth < 4) {
          await walk(p, depth + 1);
        }
        continue;
      }
      const ext = extname(name).toLowerCase();
      if (!['.safetensors', '.ckpt', '.pt', '.pth', '.bin'].includes(ext)) continue;
      const size = ls.size;
      if (sniffFileKind(p) !== 'safetensors') {
        out.push({ path: rel, format: 'pickle', kind: 'unknown', family: 'unknown', size, hash: null, usable: false, note: 'pickle: convert to .safetensors' });
        continue;
      }
      let kind: CheckpointKind = 'unknown';
      let family: ModelFamily = 'unknown';
      let note: string | undefined;
      try {
        const f = SafetensorsFile.open(p);
        try {
          ({ kind, family } = classifyKeys(f.keys()));
        } finally {
          f.close();
        }
      } catch (err) {
        note = err instanceof RedlineError ? err.message : (err as Error).message;
      }
      let hash: ModelListing['hash'] = null;
      if (opts.hashes !== false && !note) {
        const h = await fileHashes(p, { cacheFile: opts.cacheFile });
        hash = { short: modelShortHash(h), sha256: h.sha256 };
      }
      out.push({ path: rel || basename(p), format: 'single-file', kind, family, size, hash, usable: kind === 'checkpoint' && family === 'sd1', ...(note ? { note } : {}) });
    }
  };
  await walk(dir, 0);
  return out;
}
