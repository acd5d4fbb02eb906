// Protected persons: face embeddings (never the photos) of people the operator registers,
// kept as one JSON file in the data dir and rewritten atomically.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { RedlineError } from '../../errors.ts';
import type { ProtectedEmbedding } from './match.ts';

export const LIKENESS_FILE = 'likeness.json';
/** Embeddings from another face model are not comparable; the store records which one made them. */
export const LIKENESS_EMBEDDING_MODEL = 'vladmandic-human-3.3.6/faceres';

export interface LikenessSample {
  /** SHA-256 of the source image file, so the operator can tell which photo gave which sample. */
  imageSha256: string;
  embedding: number[];
}

export interface ProtectedPerson {
  name: string;
  addedAt: string;
  samples: LikenessSample[];
}

interface LikenessFile {
  version: 1;
  embeddingModel: string;
  people: ProtectedPerson[];
}

/** REDLINE_DATA_DIR, else ~/.redline. */
export function defaultDataDir(): string {
  return process.env.REDLINE_DATA_DIR || join(homedir(), '.redline');
}

export function validatePersonName(name: string): string {
  const trimmed = name.normalize('NFC').trim();
  if (trimmed.length === 0 || trimmed.length > 200 || /[\u0000-\u001f\u007f]/.test(trimmed)) {
    throw new RedlineError('bad_likeness_name', `Invalid protected person name ${JSON.stringify(name)}.`, 'Use a non-empty name of at most 200 printable characters.');
  }
  return trimmed;
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export class LikenessStore {
  private constructor(
    readonly file: string,
    private data: LikenessFile,
  ) {}

  static open(dataDir: string = defaultDataDir()): LikenessStore {
    const file = join(dataDir, LIKENESS_FILE);
    if (!existsSync(file)) return new LikenessStore(file, { version: 1, embeddingModel: LIKENESS_EMBEDDING_MODEL, people: [] });
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new RedlineError('likeness_store_corrupt', `Protected-likeness store ${file} is not valid JSON (${(err as Error).message}).`, 'Restore it from a backup or remove it and register the people again.');
    }
    const data = parsed as LikenessFile;
    if (data?.version !== 1 || !Array.isArray(data.people)) {
      throw new RedlineError('likeness_store_corrupt', `Protected-likeness store ${file} has an unknown layout.`, 'Restore it from a backup or remove it and register the people again.');
    }
    if (data.embeddingModel !== LIKENESS_EMBEDDING_MODEL) {
      throw new RedlineError(
        'likeness_store_model',
        `Protected-likeness store ${file} was made with face model ${data.embeddingModel}; this Redline uses ${LIKENESS_EMBEDDING_MODEL}.`,
        'Register the people again from their photos.',
      );
    }
    return new LikenessStore(file, data);
  }

  list(): readonly ProtectedPerson[] {
    return this.data.people;
  }

  /** Every sample of every person, the shape the output checks compare against. */
  gallery(): ProtectedEmbedding[] {
    return this.data.people.flatMap((p) => p.samples.map((s) => ({ name: p.name, embedding: s.embedding })));
  }

  /** Adds samples to a person (created when new) and saves. */
  add(name: string, samples: LikenessSample[]): ProtectedPerson {
    const person = validatePersonName(name);
    if (samples.length === 0) throw new RedlineError('likeness_no_samples', `No face samples given for ${person}.`);
    let entry = this.data.people.find((p) => p.name === person);
    if (!entry) {
      entry = { name: person, addedAt: new Date().toISOString(), samples: [] };
      this.data.people.push(entry);
    }
    for (const s of samples) {
      if (!entry.samples.some((old) => old.imageSha256 === s.imageSha256)) entry.samples.push(s);
    }
    this.save();
    return entry;
  }

  remove(name: string): void {
    const person = validatePersonName(name);
    const before = this.data.people.length;
    this.data.people = this.data.people.filter((p) => p.name !== person);
    if (this.data.people.length === before) {
      throw new RedlineError('likeness_unknown', `No protected person named ${JSON.stringify(person)}.`, 'Run `redline likeness list` to see the names.');
    }
    this.save();
  }

  /**
   * A gallery for a long-running server: re-reads the store whenever the file changes, so
   * a person registered with `redline likeness add` is protected from the next image on.
   */
  static liveGallery(dataDir: string = defaultDataDir()): () => ProtectedEmbedding[] {
    const file = join(dataDir, LIKENESS_FILE);
    let stamp = '';
    let gallery: ProtectedEmbedding[] = [];
    return () => {
      const st = existsSync(file) ? statSync(file) : undefined;
      const now = st ? `${st.mtimeMs}:${st.size}:${st.ino}` : 'absent';
      if (now !== stamp) {
        gallery = LikenessStore.open(dataDir).gallery();
        stamp = now;
      }
      return gallery;
    };
  }

  private save(): void {
    mkdirSync(join(this.file, '..'), { recursive: true });
    const tmp = `${this.file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(this.data), { mode: 0o600 });
    renameSync(tmp, this.file);
  }
}
