/**
 * A mistake the user can fix (bad file, bad flag, refused request). Interfaces print
 * `message` (and `hint`) without a stack trace; anything else that escapes is a bug.
 */
export class RedlineError extends Error {
  override readonly name = 'RedlineError';
  constructor(
    /** Stable machine-readable code, e.g. 'safetensors_truncated', 'unknown_sampler'. */
    readonly code: string,
    message: string,
    /** What the user can do about it. */
    readonly hint?: string,
  ) {
    super(hint ? `${message} ${hint}` : message);
  }
}
