/**
 * Cursor pagination, the same on every list: `limit` 1..500 (default 50),
 * an opaque `cursor`, `next_cursor` absent on the last page.
 */
import { invalidArgument } from '../domain/errors.js';

export const DEFAULT_PAGE = 50;
export const MAX_PAGE = 500;

/** What a cursor points after: a kind prefix keeps one list's cursor from being taken for another's. */
export type CursorKind = 'dm' | 'ex' | 'seq';

export function pageLimit(limit: number | undefined): number {
  const n = limit ?? DEFAULT_PAGE;
  if (n < 1 || n > MAX_PAGE) throw invalidArgument({ 'query.limit': `must be between 1 and ${MAX_PAGE}` });
  return n;
}

/** A list response: `next_cursor` only when there is a next page. */
export function pageBody<T>(items: T[], nextCursor: string | null): { items: T[]; next_cursor?: string } {
  return nextCursor === null ? { items } : { items, next_cursor: nextCursor };
}

export function encodeCursor(kind: CursorKind, value: string): string {
  return Buffer.from(`${kind}:${value}`, 'utf8').toString('base64url');
}

/** The value after which the page starts; null for the first page; 400 for a cursor this server did not issue. */
export function decodeCursor(kind: CursorKind, cursor: string | undefined, valid: RegExp): string | null {
  if (cursor === undefined || cursor === '') return null;
  const text = Buffer.from(cursor, 'base64url').toString('utf8');
  const value = text.startsWith(`${kind}:`) ? text.slice(kind.length + 1) : '';
  if (!valid.test(value)) throw invalidArgument({ 'query.cursor': 'is not a cursor this server issued' });
  return value;
}
