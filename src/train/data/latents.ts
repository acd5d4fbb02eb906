// Latent caching: each training image is encoded once by the model's VAE encoder at its
// bucket size, and the latent kept in memory and (optionally) on disk, keyed by the image's
// bytes, its bucket and the VAE's weights, so a resumed or repeated run skips the encoder.
// The cache stores the posterior mean (kohya caches one posterior sample; the SD VAE's
// posterior std is ~1e-2 of the mean's scale, and the mean keeps the cache seed-free).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import type { Checkpoint } from '../../models/checkpoint/load.ts';
import { buildVaeEncoder } from '../../models/vae.ts';
import { compileGraph } from '../../runtime/compile.ts';
import type { Session, SessionOptions } from '../../runtime/session.ts';
import { readSafetensors, writeSafetensors } from '../../tensor/safetensors.ts';
import { Tensor } from '../../tensor/tensor.ts';
import { type ImageItem, loadTrainingImage } from './dataset.ts';

export interface CachedLatent {
  /** [4, h, w] posterior mean, not yet multiplied by the scaling factor. */
  mean: Float32Array;
  h: number;
  w: number;
}

export class LatentCache {
  private readonly memory = new Map<string, CachedLatent>();
  private encoder: Session | null = null;
  private readonly vaeId: string;

  constructor(
    private readonly checkpoint: Checkpoint,
    private readonly dir: string | null,
    private readonly sessionOptions: SessionOptions = {},
  ) {
    const vae = checkpoint.components.vae;
    const h = createHash('sha256');
    for (const n of vae.names().sort()) h.update(`${n}:${vae.shape(n).join(',')}:`).update(vae.get(n).bytes());
    this.vaeId = h.digest('hex').slice(0, 16);
  }

  private key(item: ImageItem): string {
    return createHash('sha256')
      .update(readFileSync(item.path))
      .update(`|${item.bucket.join('x')}|${item.resized.join('x')}|${this.vaeId}`)
      .digest('hex')
      .slice(0, 32);
  }

  /** Encodes every item not yet cached; `onProgress(done, total)` after each. */
  async fill(items: readonly ImageItem[], onProgress?: (done: number, total: number) => void): Promise<void> {
    if (this.dir) mkdirSync(this.dir, { recursive: true });
    let done = 0;
    for (const item of items) {
      if (!this.memory.has(item.path)) this.memory.set(item.path, await this.encode(item));
      onProgress?.(++done, items.length);
    }
    if (this.encoder) {
      await this.encoder.release();
      this.encoder = null;
    }
  }

  get(item: ImageItem): CachedLatent {
    const l = this.memory.get(item.path);
    if (!l) throw new Error(`latent of ${item.path} was not cached`);
    return l;
  }

  private async encode(item: ImageItem): Promise<CachedLatent> {
    const key = this.key(item);
    const file = this.dir ? join(this.dir, `${key}.safetensors`) : null;
    if (file && existsSync(file)) {
      const t = readSafetensors(file).get('mean')!;
      return { mean: t.toFloat32(), h: t.shape[1]!, w: t.shape[2]! };
    }
    const img = await loadTrainingImage(item);
    this.encoder ??= await compileGraph(buildVaeEncoder(this.checkpoint.configs.vae, this.checkpoint.components.vae), this.sessionOptions);
    const out = await this.encoder.run({ image: new Tensor('f32', [1, 3, img.height, img.width], img.data) }, ['mean']);
    const mean = new Float32Array(out.mean!.toFloat32());
    const h = img.height / 8;
    const w = img.width / 8;
    if (file) {
      const tmp = `${file}.${process.pid}.tmp`;
      writeSafetensors(tmp, { mean: new Tensor('f32', [4, h, w], mean) });
      renameSync(tmp, file);
    }
    return { mean, h, w };
  }
}
