/** Mapping between table rows and domain objects. */
import type { Selectable } from 'kysely';
import type { DesiredState, Machine, Phase } from '../domain/types.js';
import type { EventsTable, MachinesTable } from './schema.js';
import type { StoredEvent } from './store.js';

export function rowToMachine(r: Selectable<MachinesTable>): Machine {
  return {
    machineId: r.machine_id,
    orgId: r.org_id,
    vcpu: r.vcpu,
    memoryMib: r.memory_mib,
    storageGib: r.storage_gib,
    autosleepSeconds: r.autosleep_seconds,
    desiredState: r.desired_state as DesiredState,
    phase: r.phase as Phase,
    reason: r.reason,
    retryable: r.retryable === 1,
    lastError: r.last_error,
    revision: r.revision,
    lastTransitionAt: r.last_transition_at,
    lastProgressAt: r.last_progress_at,
    createdAt: r.created_at,
    hostId: r.host_id,
    applied:
      r.applied_vcpu === null || r.applied_memory_mib === null || r.applied_storage_gib === null
        ? null
        : { vcpu: r.applied_vcpu, memoryMib: r.applied_memory_mib, storageGib: r.applied_storage_gib },
    attempts: r.attempts,
    nextAttemptAt: r.next_attempt_at,
    lastActivityAt: r.last_activity_at,
    destroyedAt: r.destroyed_at,
    logCompactedRevision: r.log_compacted_revision,
  };
}

/** The columns a commit writes: all but lease and compaction bookkeeping. */
export type WrittenMachineRow = Omit<Selectable<MachinesTable>, 'log_compacted_revision' | 'owner' | 'lease_until'>;

/** Every written column, once (a Record: a column missing or unknown does not compile). */
const WRITTEN: Record<keyof WrittenMachineRow, true> = {
  machine_id: true,
  org_id: true,
  vcpu: true,
  memory_mib: true,
  storage_gib: true,
  autosleep_seconds: true,
  desired_state: true,
  phase: true,
  reason: true,
  retryable: true,
  last_error: true,
  revision: true,
  last_transition_at: true,
  last_progress_at: true,
  created_at: true,
  host_id: true,
  applied_vcpu: true,
  applied_memory_mib: true,
  applied_storage_gib: true,
  attempts: true,
  next_attempt_at: true,
  last_activity_at: true,
  destroyed_at: true,
};

/** WrittenMachineRow's columns, in the order of the hand-written statements' parameters (hot-sql.ts). */
export const MACHINE_COLUMNS = Object.keys(WRITTEN) as readonly (keyof WrittenMachineRow)[];

/** Every column a commit writes. */
export function machineToRow(m: Machine): WrittenMachineRow {
  return {
    machine_id: m.machineId,
    org_id: m.orgId,
    vcpu: m.vcpu,
    memory_mib: m.memoryMib,
    storage_gib: m.storageGib,
    autosleep_seconds: m.autosleepSeconds,
    desired_state: m.desiredState,
    phase: m.phase,
    reason: m.reason,
    retryable: m.retryable ? 1 : 0,
    last_error: m.lastError,
    revision: m.revision,
    last_transition_at: m.lastTransitionAt,
    last_progress_at: m.lastProgressAt,
    created_at: m.createdAt,
    host_id: m.hostId,
    applied_vcpu: m.applied?.vcpu ?? null,
    applied_memory_mib: m.applied?.memoryMib ?? null,
    applied_storage_gib: m.applied?.storageGib ?? null,
    attempts: m.attempts,
    next_attempt_at: m.nextAttemptAt,
    last_activity_at: m.lastActivityAt,
    destroyed_at: m.destroyedAt,
  };
}

export function rowToEvent(r: Selectable<EventsTable>): StoredEvent {
  return {
    revision: r.revision,
    machineId: r.machine_id,
    orgId: r.org_id,
    phase: r.phase as Phase,
    body: r.body,
    endsStream: r.ends_stream === 1,
    committedAt: r.committed_at,
  };
}
