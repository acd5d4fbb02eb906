import { readFileSync } from 'node:fs';
import { RedlineError } from '../../errors.ts';
import { DEFAULT_OUTPUT_CHECK_OPTIONS } from '../output/options.ts';
import type { FaceAnalyzer } from '../output/faces.ts';
import { readImageFile } from '../output/image.ts';
import { sha256, type LikenessSample } from './store.ts';

/**
 * One embedding per photo. A photo must show exactly one face: with several, Redline
 * cannot tell which one the operator means to protect.
 */
export async function likenessSampleFromFile(faces: FaceAnalyzer, file: string, minFaceScore = DEFAULT_OUTPUT_CHECK_OPTIONS.minFaceScore): Promise<LikenessSample> {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    throw new RedlineError('likeness_image_unreadable', `Cannot read ${file}: ${(err as Error).message}.`);
  }
  const image = await readImageFile(file);
  const found = (await faces.analyze(image)).filter((f) => f.score >= minFaceScore);
  if (found.length === 0) {
    throw new RedlineError('likeness_no_face', `No face found in ${file}.`, 'Use a clear, frontal photo where the face is at least 1/8 of the picture.');
  }
  if (found.length > 1) {
    throw new RedlineError('likeness_many_faces', `${found.length} faces found in ${file}; cannot tell which person to protect.`, 'Crop the photo to the one person.');
  }
  const embedding = Array.from(found[0]!.embedding);
  if (!embedding.some((v) => v !== 0)) {
    throw new RedlineError('likeness_no_face', `The face in ${file} gave an empty embedding.`, 'Use a clearer, frontal photo of the face.');
  }
  return { imageSha256: sha256(bytes), embedding };
}
