/**
 * Wire schemas of the Machine Executions operations, mirroring the reference
 * field for field (`additionalProperties: false`): they validate requests,
 * serialise responses (no stray field can leave) and feed /openapi.json.
 */
import '@fastify/swagger';
import type { Static, TSchema } from '@sinclair/typebox';
import { Type } from '@sinclair/typebox';
import { EXECUTION_STATUSES } from '../domain/executions.js';
import { MachineParams, PublicPathSegment } from './schemas.js';

const closed = { additionalProperties: false } as const;

function nullableArray<T extends TSchema>(items: T) {
  return Type.Unsafe<Static<T>[] | null>({ type: ['array', 'null'], items });
}

const Int64 = () => Type.Integer({ format: 'int64' });
const DateTime = () => Type.String({ format: 'date-time' });
const Status = Type.Union(EXECUTION_STATUSES.map((s) => Type.Literal(s)));

export const CreateExecutionRequest = Type.Object(
  {
    command: nullableArray(Type.String()),
    cwd: Type.Optional(Type.String()),
    env: Type.Optional(Type.Record(Type.String(), Type.String())),
    stdin: Type.Optional(Type.String()),
    timeout_ms: Type.Optional(Int64()),
  },
  closed,
);
export type CreateExecutionRequest = Static<typeof CreateExecutionRequest>;

const ArtifactRef = Type.Object({ artifact_id: Type.String(), name: Type.String() }, closed);

export const ExecutionResponse = Type.Object(
  {
    artifacts: Type.Optional(nullableArray(ArtifactRef)),
    command: nullableArray(Type.String()),
    completed_at: Type.Optional(DateTime()),
    created_at: DateTime(),
    cwd: Type.Optional(Type.String()),
    env_keys: Type.Optional(nullableArray(Type.String())),
    error_code: Type.Optional(Type.String()),
    error_message: Type.Optional(Type.String()),
    execution_id: Type.String(),
    exit_code: Type.Optional(Int64()),
    expires_at: Type.Optional(DateTime()),
    machine_id: Type.String(),
    retry_after_ms: Type.Optional(Int64()),
    signal: Type.Optional(Int64()),
    started_at: Type.Optional(DateTime()),
    status: Status,
    stderr_bytes: Type.Optional(Int64()),
    stderr_truncated: Type.Optional(Type.Boolean()),
    stdout_bytes: Type.Optional(Int64()),
    stdout_truncated: Type.Optional(Type.Boolean()),
  },
  closed,
);

export const ExecutionListResponse = Type.Object({ items: nullableArray(ExecutionResponse), next_cursor: Type.Optional(Type.String()) }, closed);

export const ExecutionEvent = Type.Object(
  {
    at: DateTime(),
    chunk: Type.Optional(Type.String()),
    error_code: Type.Optional(Type.String()),
    error_message: Type.Optional(Type.String()),
    exit_code: Type.Optional(Int64()),
    sequence: Int64(),
    signal: Type.Optional(Int64()),
    status: Type.Optional(Status),
    type: Type.Union([Type.Literal('lifecycle'), Type.Literal('stdout'), Type.Literal('stderr')]),
  },
  closed,
);

export const ExecutionEventsResponse = Type.Object({ items: nullableArray(ExecutionEvent), next_cursor: Type.Optional(Type.String()) }, closed);

export const ExecutionOutputResponse = Type.Object(
  {
    execution_id: Type.String(),
    stderr: Type.Optional(Type.String()),
    stderr_bytes: Type.Optional(Int64()),
    stderr_truncated: Type.Optional(Type.Boolean()),
    stdout: Type.Optional(Type.String()),
    stdout_bytes: Type.Optional(Int64()),
    stdout_truncated: Type.Optional(Type.Boolean()),
  },
  closed,
);

export const ExecutionParams = Type.Object({ ...MachineParams.properties, execution_id: PublicPathSegment }, closed);
export type ExecutionParams = Static<typeof ExecutionParams>;
