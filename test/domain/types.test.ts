/** Wire formatting of instants: RFC 3339 in UTC with milliseconds, whatever the order of the calls. */
import { describe, expect, it } from 'vitest';
import { rfc3339 } from '../../src/domain/types.js';

describe('rfc3339', () => {
  it('formats each instant, repeated or alternating', () => {
    const a = Date.UTC(2026, 10, 29, 13, 59, 1, 7);
    const b = a + 1;
    expect([rfc3339(a), rfc3339(a), rfc3339(b), rfc3339(a), rfc3339(0)]).toEqual([
      '2026-11-29T13:59:01.007Z',
      '2026-11-29T13:59:01.007Z',
      '2026-11-29T13:59:01.008Z',
      '2026-11-29T13:59:01.007Z',
      '1970-01-01T00:00:00.000Z',
    ]);
  });

  it('an invalid instant is an error, not the previous text', () => {
    rfc3339(1_000);
    expect(() => rfc3339(Number.NaN)).toThrow(RangeError);
  });
});
