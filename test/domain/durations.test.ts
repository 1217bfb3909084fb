import { describe, expect, it } from 'vitest';
import { durationSeconds, MAX_DURATION_SECONDS, parseDuration } from '../../src/domain/durations.js';

/** The largest whole-second Go time.Duration (the reference's autosleep_seconds maximum). */
const MAX = 9_223_372_036;

describe('parseDuration: accepted forms', () => {
  const table: ReadonlyArray<[input: string, seconds: number]> = [
    // The contract's examples.
    ['30s', 30],
    ['15m', 900],
    ['2h', 7_200],
    ['7d3h4s', 7 * 86_400 + 3 * 3_600 + 4], // 615604
    ['1w3d', 604_800 + 3 * 86_400], // 864000
    ['1800', 1_800],
    ['never', 0],
    // More of the same grammar.
    ['0', 0],
    ['0s', 0],
    ['1w', 604_800],
    ['1d', 86_400],
    ['1h30m', 5_400],
    ['1w1d1h1m1s', 604_800 + 86_400 + 3_600 + 60 + 1],
    ['90m', 5_400],
    ['300', 300],
    [String(MAX), MAX],
    [`${MAX}s`, MAX],
    ['15250w', 15_250 * 604_800], // just under the maximum
  ];

  it.each(table)('%j -> %i s', (input, seconds) => {
    expect(parseDuration(input)).toEqual({ seconds });
    expect(durationSeconds(input, 'autosleep')).toBe(seconds);
  });

  it('the exported maximum is the reference maximum', () => {
    expect(MAX_DURATION_SECONDS).toBe(MAX);
  });
});

describe('parseDuration: rejected forms', () => {
  const bad: ReadonlyArray<[input: string, why: string]> = [
    ['', 'empty'],
    ['-5', 'negative'],
    ['-5s', 'negative with a unit'],
    ['1.5h', 'fractional'],
    ['5x', 'unknown unit'],
    ['h', 'unit without a number'],
    ['s', 'unit without a number'],
    ['30m1h', 'units out of order'],
    ['4s7d', 'units out of order'],
    ['1h1h', 'a unit twice'],
    ['1h 30m', 'inner space'],
    ['5ms', 'milliseconds are not a unit here'],
    ['nevermore', 'not never'],
    ['1e3', 'exponent notation'],
    [String(MAX + 1), 'over the maximum, bare'],
    [`${MAX + 1}s`, 'over the maximum, in seconds'],
    ['15251w', 'over the maximum, in weeks'],
    ['99999999999999999999', 'beyond a safe integer'],
    ['9223372036s1s', 'not a compound: seconds twice'],
  ];

  it.each(bad)('%j (%s) is an error', (input) => {
    const parsed = parseDuration(input);
    expect(parsed).not.toHaveProperty('seconds');
    expect(parsed).toHaveProperty('error');
    if ('error' in parsed) expect(parsed.error.length).toBeGreaterThan(0);
  });

  it('durationSeconds throws, naming the setting', () => {
    expect(() => durationSeconds('5x', 'HANGAR_AUTOSLEEP')).toThrow(/^HANGAR_AUTOSLEEP: /);
  });

  it('the message for a value over the maximum names the maximum', () => {
    const parsed = parseDuration(String(MAX + 1));
    expect('error' in parsed && parsed.error).toContain(String(MAX));
  });
});
