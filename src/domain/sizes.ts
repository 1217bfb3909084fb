/**
 * Machine sizes: what a request may ask for, and what fits where.
 * The reference sets no bounds; these are Hangar's, chosen so that any value
 * a real host could serve is accepted and absurd ones get a clear 400.
 */
import type { Sizes } from './types.js';

export const VCPU_STEP = 0.25;
export const SIZE_LIMITS = {
  vcpu: { min: VCPU_STEP, max: 512 },
  memoryMib: { min: 32, max: 16 * 1024 * 1024 },
  storageGib: { min: 1, max: 1024 * 1024 },
} as const;

export interface SizeRequest {
  vcpu?: number | undefined;
  memory_mib?: number | undefined;
  storage_gib?: number | undefined;
}

/** Checks the size fields present in a request body; returns `details` entries for each bad one. */
export function validateSizes(body: SizeRequest): Record<string, string> {
  const details: Record<string, string> = {};
  if (body.vcpu !== undefined) {
    const { min, max } = SIZE_LIMITS.vcpu;
    if (!Number.isFinite(body.vcpu) || body.vcpu < min || body.vcpu > max) {
      details['body.vcpu'] = `must be between ${min} and ${max}`;
    } else if (!Number.isInteger(body.vcpu / VCPU_STEP)) {
      details['body.vcpu'] = `must be a multiple of ${VCPU_STEP}`;
    }
  }
  checkInteger(details, 'body.memory_mib', body.memory_mib, SIZE_LIMITS.memoryMib);
  checkInteger(details, 'body.storage_gib', body.storage_gib, SIZE_LIMITS.storageGib);
  return details;
}

function checkInteger(
  details: Record<string, string>,
  field: string,
  value: number | undefined,
  limits: { min: number; max: number },
): void {
  if (value === undefined) return;
  if (!Number.isSafeInteger(value)) details[field] = 'must be an integer';
  else if (value < limits.min || value > limits.max) details[field] = `must be between ${limits.min} and ${limits.max}`;
}

export function sizesEqual(a: Sizes | null, b: Sizes | null): boolean {
  if (a === null || b === null) return a === b;
  return a.vcpu === b.vcpu && a.memoryMib === b.memoryMib && a.storageGib === b.storageGib;
}

export function addSizes(a: Sizes, b: Sizes): Sizes {
  return { vcpu: a.vcpu + b.vcpu, memoryMib: a.memoryMib + b.memoryMib, storageGib: a.storageGib + b.storageGib };
}

export const ZERO_SIZES: Sizes = { vcpu: 0, memoryMib: 0, storageGib: 0 };

export function fits(request: Sizes, free: Sizes): boolean {
  return request.vcpu <= free.vcpu && request.memoryMib <= free.memoryMib && request.storageGib <= free.storageGib;
}
