/** Table shapes as Kysely sees them. Booleans are 0/1 integers and times epoch ms, the same on both dialects. */
import type { Generated } from 'kysely';

export interface OrgsTable {
  org_id: string;
  name: string;
  created_at: number;
}

export interface ApiKeysTable {
  key_id: string;
  org_id: string;
  key_hash: string;
  /** First characters of the key, to recognise it in listings. */
  prefix: string;
  scope: 'admin' | 'user';
  name: string;
  created_at: number;
  revoked_at: number | null;
}

export interface CountersTable {
  name: string;
  value: number;
}

export interface MachinesTable {
  machine_id: string;
  org_id: string;
  vcpu: number;
  memory_mib: number;
  storage_gib: number;
  autosleep_seconds: number;
  desired_state: string;
  phase: string;
  reason: string;
  retryable: number;
  last_error: string | null;
  revision: number;
  last_transition_at: number;
  last_progress_at: number;
  created_at: number;
  host_id: string | null;
  applied_vcpu: number | null;
  applied_memory_mib: number | null;
  applied_storage_gib: number | null;
  attempts: number;
  next_attempt_at: number | null;
  last_activity_at: number;
  destroyed_at: number | null;
  log_compacted_revision: Generated<number>;
  /** Replica that drives this machine, and until when (PostgreSQL mode). */
  owner: string | null;
  lease_until: number | null;
}

export interface EventsTable {
  revision: number;
  machine_id: string;
  org_id: string;
  phase: string;
  /** The LifecycleResponse as committed, one line of JSON: the bytes every watcher gets. */
  body: string;
  ends_stream: number;
  committed_at: number;
}

export interface HostsTable {
  host_id: string;
  vcpu: number;
  memory_mib: number;
  storage_gib: number;
  ready: number;
  updated_at: number;
  /** What placed machines hold on this host, kept in step with every commit that moves an allocation. */
  allocated_vcpu: Generated<number>;
  allocated_memory_mib: Generated<number>;
  allocated_storage_gib: Generated<number>;
}

export interface IdempotencyKeysTable {
  org_id: string;
  idem_key: string;
  request_hash: string;
  state: 'in_flight' | 'done';
  status_code: number | null;
  headers: string | null;
  body: string | null;
  created_at: number;
  locked_until: number;
}

export interface Database {
  orgs: OrgsTable;
  api_keys: ApiKeysTable;
  counters: CountersTable;
  machines: MachinesTable;
  events: EventsTable;
  hosts: HostsTable;
  idempotency_keys: IdempotencyKeysTable;
}
