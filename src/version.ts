/** Hangar's version, as the CLI and the OpenAPI document report it; test/version.test.ts keeps it equal to package.json's. */
export const VERSION = '0.1.0';
