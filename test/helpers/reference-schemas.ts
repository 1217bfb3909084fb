/**
 * Validators for the reference's component schemas (test/fixtures/dcs-schemas.json).
 * date-time is checked as the contract narrows it: RFC 3339, UTC, milliseconds.
 */
import { readFileSync } from 'node:fs';
import { Ajv2020 } from 'ajv/dist/2020.js';
import type { ValidateFunction } from 'ajv';

const fixture = JSON.parse(readFileSync(new URL('../fixtures/dcs-schemas.json', import.meta.url), 'utf8')) as {
  $defs: Record<string, object>;
};

const ajv = new Ajv2020({ allErrors: true, strict: false });
ajv.addFormat('date-time', /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
for (const f of ['int64', 'int32', 'double']) ajv.addFormat(f, true);
ajv.addSchema({ $id: 'dcs', $defs: fixture.$defs });

const cache = new Map<string, ValidateFunction>();

export function referenceSchema(name: string): object {
  const s = fixture.$defs[name];
  if (s === undefined) throw new Error(`no reference schema ${name}`);
  return s;
}

/** Throws with Ajv's messages when `body` does not match the reference schema `name`. */
export function assertMatchesReference(name: string, body: unknown): void {
  let validate = cache.get(name);
  if (validate === undefined) {
    validate = ajv.compile({ $ref: `dcs#/$defs/${name}` });
    cache.set(name, validate);
  }
  if (!validate(body)) {
    throw new Error(`${name} mismatch: ${ajv.errorsText(validate.errors)}\nbody: ${JSON.stringify(body)}`);
  }
}
