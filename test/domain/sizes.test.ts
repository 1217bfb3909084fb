import { describe, expect, it } from 'vitest';
import { addSizes, fits, sizesEqual, validateSizes, VCPU_STEP } from '../../src/domain/sizes.js';

describe('validateSizes: vcpu', () => {
  it.each([0.25, 0.5, 0.75, 1, 1.75, 2, 16, 64.5])('vcpu %d is accepted', (vcpu) => {
    expect(validateSizes({ vcpu })).toEqual({});
  });

  it('the grid is 0.25', () => {
    expect(VCPU_STEP).toBe(0.25);
  });

  it('vcpu off the 0.25 grid is rejected with the contract message', () => {
    expect(validateSizes({ vcpu: 0.3 })).toEqual({ 'body.vcpu': 'must be a multiple of 0.25' });
    expect(validateSizes({ vcpu: 1.1 })).toEqual({ 'body.vcpu': 'must be a multiple of 0.25' });
  });

  it.each([
    ['0.1 (below the grid)', 0.1],
    ['0.3 (off the grid)', 0.3],
    ['zero', 0],
    ['negative', -1],
    ['negative on the grid', -0.25],
    ['huge', 1e9],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
    ['-Infinity', Number.NEGATIVE_INFINITY],
  ])('vcpu %s is rejected', (_name, vcpu) => {
    expect(Object.keys(validateSizes({ vcpu }))).toEqual(['body.vcpu']);
  });
});

describe.each([
  ['memory_mib', 'body.memory_mib', [32, 512, 1024, 65_536]],
  ['storage_gib', 'body.storage_gib', [1, 10, 100, 2_048]],
] as const)('validateSizes: %s', (field, key, good) => {
  it.each(good)('%i is accepted', (value) => {
    expect(validateSizes({ [field]: value })).toEqual({});
  });

  it.each([
    ['zero', 0],
    ['negative', -1],
    ['fractional', 1.5],
    ['huge', 1e12],
    ['beyond a safe integer', 2 ** 60],
    ['NaN', Number.NaN],
    ['Infinity', Number.POSITIVE_INFINITY],
  ])('%s is rejected', (_name, value) => {
    const details = validateSizes({ [field]: value });
    expect(Object.keys(details)).toEqual([key]);
    expect(details[key]).toMatch(/\S/);
  });
});

describe('validateSizes: the request as a whole', () => {
  it('an empty request (PATCH without sizes) is fine', () => {
    expect(validateSizes({})).toEqual({});
  });

  it('names every offending field at once', () => {
    const details = validateSizes({ vcpu: 0.3, memory_mib: 0, storage_gib: -1 });
    expect(Object.keys(details).sort()).toEqual(['body.memory_mib', 'body.storage_gib', 'body.vcpu']);
  });

  it('names only the offending fields', () => {
    expect(Object.keys(validateSizes({ vcpu: 2, memory_mib: Number.NaN, storage_gib: 10 }))).toEqual(['body.memory_mib']);
  });
});

describe('size arithmetic', () => {
  const a = { vcpu: 1, memoryMib: 1024, storageGib: 10 };

  it('sizesEqual compares every field, and null only equals null', () => {
    expect(sizesEqual(a, { ...a })).toBe(true);
    expect(sizesEqual(a, { ...a, vcpu: 1.25 })).toBe(false);
    expect(sizesEqual(a, { ...a, memoryMib: 2048 })).toBe(false);
    expect(sizesEqual(a, { ...a, storageGib: 11 })).toBe(false);
    expect(sizesEqual(a, null)).toBe(false);
    expect(sizesEqual(null, a)).toBe(false);
    expect(sizesEqual(null, null)).toBe(true);
  });

  it('addSizes adds field by field', () => {
    expect(addSizes(a, { vcpu: 0.5, memoryMib: 512, storageGib: 5 })).toEqual({ vcpu: 1.5, memoryMib: 1536, storageGib: 15 });
  });

  it('fits needs every field to fit; equal fits', () => {
    expect(fits(a, a)).toBe(true);
    expect(fits(a, { vcpu: 2, memoryMib: 2048, storageGib: 20 })).toBe(true);
    expect(fits(a, { ...a, vcpu: 0.75 })).toBe(false);
    expect(fits(a, { ...a, memoryMib: 1023 })).toBe(false);
    expect(fits(a, { ...a, storageGib: 9 })).toBe(false);
  });
});
