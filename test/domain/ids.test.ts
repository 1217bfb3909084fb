import { describe, expect, it } from 'vitest';
import { isUuid, MACHINE_ID_PATTERN, newMachineId, PUBLIC_PATH_SEGMENT_PATTERN, uuidv7 } from '../../src/domain/ids.js';

/** The reference's MachineIDPathSegment pattern, copied here so a change to the constant is caught. */
const REFERENCE_MACHINE_ID = /^dm-[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
const DM_UUIDV7 = /^dm-[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** The 48-bit millisecond timestamp at the front of a UUIDv7. */
function timestampOf(id: string): number {
  const hex = id.replace(/^dm-/, '').replaceAll('-', '');
  return parseInt(hex.slice(0, 12), 16);
}

describe('newMachineId', () => {
  it('matches the reference pattern', () => {
    for (let i = 0; i < 200; i++) expect(newMachineId()).toMatch(REFERENCE_MACHINE_ID);
    expect(MACHINE_ID_PATTERN).toBe(REFERENCE_MACHINE_ID.source);
  });

  it('is dm- and a lowercase UUIDv7: version nibble 7, variant 10xx', () => {
    for (let i = 0; i < 200; i++) {
      const id = newMachineId();
      expect(id).toMatch(DM_UUIDV7);
      expect(id).toBe(id.toLowerCase());
      const uuid = id.slice(3);
      expect(isUuid(uuid)).toBe(true);
      expect(uuid[14]).toBe('7');
      expect(parseInt(uuid[19] ?? '', 16) >> 2).toBe(0b10);
    }
  });

  it('carries its creation time in milliseconds', () => {
    const at = Date.UTC(2025, 5, 1, 8, 30, 0, 123);
    expect(timestampOf(newMachineId(at))).toBe(at);
    const before = Date.now();
    const id = newMachineId();
    const after = Date.now();
    expect(timestampOf(id)).toBeGreaterThanOrEqual(before);
    expect(timestampOf(id)).toBeLessThanOrEqual(after);
  });

  it('ids sort by creation time', () => {
    const start = Date.UTC(2025, 0, 1);
    const times = [0, 1, 2, 999, 1_000, 60_000, 3_600_000, 86_400_000, 365 * 86_400_000].map((d) => start + d);
    const ids = times.map((t) => newMachineId(t));
    const shuffled = [...ids].reverse();
    expect(shuffled.sort()).toEqual(ids);
  });

  it('ids are unique', () => {
    const at = Date.now();
    const ids = new Set(Array.from({ length: 2_000 }, () => newMachineId(at)));
    expect(ids.size).toBe(2_000);
  });
});

describe('uuidv7 / isUuid', () => {
  it('uuidv7 is a UUID with version 7', () => {
    const u = uuidv7();
    expect(isUuid(u)).toBe(true);
    expect(u[14]).toBe('7');
  });

  it('isUuid accepts any case and rejects other text', () => {
    expect(isUuid('0190A5B2-8A00-7000-8000-00000000000A')).toBe(true);
    expect(isUuid('not-a-uuid')).toBe(false);
    expect(isUuid('0190a5b2-8a00-7000-8000-00000000000')).toBe(false);
    expect(isUuid('dm-0190a5b2-8a00-7000-8000-000000000001')).toBe(false);
  });
});

describe('PUBLIC_PATH_SEGMENT_PATTERN', () => {
  const re = new RegExp(PUBLIC_PATH_SEGMENT_PATTERN);
  it.each(['a', 'exec-1', 'A.b_c-9', 'x1'])('%j is a valid sub-resource id', (s) => {
    expect(s).toMatch(re);
  });
  it.each(['', '-a', 'a-', '.a', 'a/b', 'a b'])('%j is not', (s) => {
    expect(s).not.toMatch(re);
  });
});
