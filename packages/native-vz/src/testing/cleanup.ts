// Closers the FramePort tests register while a test runs, run (newest first) after each test so a
// failing test leaks no fd, port or thread into the next one.
import { afterEach } from 'vitest';

/** Returns the list to push closers onto; registers the `afterEach` that empties it. */
export function closersAfterEach(): Array<() => void> {
  const closers: Array<() => void> = [];
  afterEach(() => {
    while (closers.length > 0) {
      try {
        closers.pop()!();
      } catch {
        /* already closed by the test itself */
      }
    }
  });
  return closers;
}
