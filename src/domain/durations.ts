/**
 * Durations of the contract: `30s`, `15m`, `2h`, `7d3h4s`, `1w3d`, a bare
 * number of seconds (`"1800"`), or `never` (0 = off).
 */

/** Largest whole-second Go time.Duration, the reference's autosleep_seconds maximum. */
export const MAX_DURATION_SECONDS = 9_223_372_036;

export const SECOND_MS = 1000;
export const MINUTE_MS = 60 * SECOND_MS;
export const HOUR_MS = 60 * MINUTE_MS;
export const DAY_MS = 24 * HOUR_MS;

const UNIT_SECONDS: Record<string, number> = { w: 604_800, d: 86_400, h: 3_600, m: 60, s: 1 };
const UNIT_ORDER = 'wdhms';
const COMPOUND = /^(\d+[wdhms])+$/;

/** Parses a duration; returns seconds, or an error message fit for `details`. */
export function parseDuration(input: string): { seconds: number } | { error: string } {
  const text = input.trim();
  if (text === 'never') return { seconds: 0 };
  let seconds: number;
  if (/^\d+$/.test(text)) {
    seconds = Number(text);
  } else if (COMPOUND.test(text)) {
    seconds = 0;
    let lastUnit = -1;
    for (const [, digits, unit] of text.matchAll(/(\d+)([wdhms])/g)) {
      const order = UNIT_ORDER.indexOf(unit!);
      // Units must come largest first, each once: `1h30m`, not `30m1h` or `1h1h`.
      if (order <= lastUnit) return { error: 'units must be in order w, d, h, m, s, each at most once' };
      lastUnit = order;
      seconds += Number(digits) * UNIT_SECONDS[unit!]!;
    }
  } else {
    return { error: 'must be a duration such as 30s, 15m, 2h, 7d3h4s, 1w3d, a number of seconds, or never' };
  }
  if (!Number.isSafeInteger(seconds) || seconds > MAX_DURATION_SECONDS) {
    return { error: `must be at most ${MAX_DURATION_SECONDS} seconds` };
  }
  return { seconds };
}

/** Parses a duration or throws; for configuration, where a bad value must stop start-up. */
export function durationSeconds(input: string, name: string): number {
  const parsed = parseDuration(input);
  if ('error' in parsed) throw new Error(`${name}: ${parsed.error}`);
  return parsed.seconds;
}
