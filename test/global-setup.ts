/**
 * Runs once before the suites: when they run on PostgreSQL, makes sure there
 * is a server to run them on (HANGAR_TEST_DATABASE_URL, else an embedded one).
 */
export default async function setup(): Promise<void> {
  // PostgreSQL mode is prepared in store-target.ts from HANGAR_TEST_DATABASE_URL.
}
