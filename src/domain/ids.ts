/**
 * Identifiers. machine_id is `dm-` + a lowercase UUIDv7 (time-ordered, so ids
 * sort by creation and pagination by id is stable).
 */
import { randomBytes } from 'node:crypto';

export function uuidv7(now: number = Date.now()): string {
  const bytes = randomBytes(16);
  // 48-bit big-endian millisecond timestamp, then version 7 and the RFC 4122 variant.
  bytes.writeUIntBE(now, 0, 6);
  bytes[6] = (bytes[6]! & 0x0f) | 0x70;
  bytes[8] = (bytes[8]! & 0x3f) | 0x80;
  const hex = bytes.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export function newMachineId(now?: number): string {
  return `dm-${uuidv7(now)}`;
}

/** The reference's MachineIDPathSegment. */
export const MACHINE_ID_PATTERN = '^dm-[a-z0-9]([a-z0-9-]*[a-z0-9])?$';
/** The reference's PublicPathSegment (sub-resource ids). */
export const PUBLIC_PATH_SEGMENT_PATTERN = '^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
export function isUuid(text: string): boolean {
  return UUID_RE.test(text.toLowerCase());
}
