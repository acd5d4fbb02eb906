import { RedlineError } from '../../src/errors.ts';

/** The RedlineError `fn` throws; any other error is rethrown, and no error fails the test. */
export function refusalOf(fn: () => unknown): RedlineError {
  try {
    fn();
  } catch (err) {
    if (err instanceof RedlineError) return err;
    throw err;
  }
  throw new Error('expected a RedlineError, got none');
}
