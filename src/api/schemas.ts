/**
 * Wire schemas, mirroring the reference's component schemas field for field
 * (`additionalProperties: false` everywhere). They validate requests,
 * serialise responses (so no stray field can leave), and generate /openapi.json.
 */
// Brings @fastify/swagger's route-schema fields (operationId, summary, tags) into FastifySchema.
import '@fastify/swagger';
import type { Static, TSchema } from '@sinclair/typebox';
import { Type } from '@sinclair/typebox';
import { DESIRED_STATES, PHASES } from '../domain/types.js';
import { MACHINE_ID_PATTERN, PUBLIC_PATH_SEGMENT_PATTERN } from '../domain/ids.js';

const closed = { additionalProperties: false } as const;

/** The reference types list fields as `["array","null"]`. */
function nullableArray<T extends TSchema>(items: T) {
  return Type.Unsafe<Static<T>[] | null>({ type: ['array', 'null'], items });
}

const Int64 = (opts: object = {}) => Type.Integer({ format: 'int64', ...opts });
const DateTime = () => Type.String({ format: 'date-time' });

export const ErrorEnvelope = Type.Object(
  {
    error_code: Type.String(),
    message: Type.String(),
    retryable: Type.Boolean(),
    retry_after_ms: Type.Optional(Int64()),
    details: Type.Optional(Type.Unsafe<Record<string, string>>({ type: 'object', additionalProperties: { type: 'string' } })),
  },
  closed,
);

export const LifecycleStatus = Type.Object(
  {
    phase: Type.Union(PHASES.map((p) => Type.Literal(p))),
    reason: Type.String(),
    retryable: Type.Boolean(),
    revision: Type.String(),
    last_transition_at: DateTime(),
    last_progress_at: DateTime(),
    last_error: Type.Optional(Type.String()),
  },
  closed,
);

const machineFields = {
  machine_id: Type.String(),
  vcpu: Type.Number({ format: 'double' }),
  memory_mib: Int64(),
  storage_gib: Int64(),
  autosleep_seconds: Int64({ minimum: 0, maximum: 9223372036 }),
  desired_state: Type.Union(DESIRED_STATES.map((s) => Type.Literal(s))),
  status: LifecycleStatus,
};

export const LifecycleResponse = Type.Object(machineFields, closed);
export const MachineListItem = Type.Object({ ...machineFields, created_at: DateTime() }, closed);
export const MachineListResponse = Type.Object(
  { items: nullableArray(MachineListItem), next_cursor: Type.Optional(Type.String()) },
  closed,
);

export const CreateMachineRequest = Type.Object(
  {
    vcpu: Type.Number({ format: 'double' }),
    memory_mib: Int64(),
    storage_gib: Int64(),
    autosleep: Type.Optional(Type.String()),
  },
  closed,
);
export type CreateMachineRequest = Static<typeof CreateMachineRequest>;

export const UpdateMachineRequest = Type.Object(
  {
    vcpu: Type.Optional(Type.Number({ format: 'double' })),
    memory_mib: Type.Optional(Int64()),
    storage_gib: Type.Optional(Int64()),
    autosleep: Type.Optional(Type.String()),
  },
  closed,
);
export type UpdateMachineRequest = Static<typeof UpdateMachineRequest>;

export const MachineParams = Type.Object(
  { machine_id: Type.String({ minLength: 4, maxLength: 253, pattern: MACHINE_ID_PATTERN }) },
  closed,
);
export type MachineParams = Static<typeof MachineParams>;

export const PublicPathSegment = Type.String({ minLength: 1, maxLength: 253, pattern: PUBLIC_PATH_SEGMENT_PATTERN });

export const ListQuery = Type.Object(
  { limit: Type.Optional(Int64()), cursor: Type.Optional(Type.String()) },
  closed,
);
export type ListQuery = Static<typeof ListQuery>;

/** Error responses every /v1 route can give. */
export const errorResponses = {
  '4xx': ErrorEnvelope,
  '5xx': ErrorEnvelope,
} as const;
