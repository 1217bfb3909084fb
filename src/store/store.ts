/**
 * Persistence behind one interface. The only way a machine changes is
 * `mutateMachine`/`insertMachine`: one transaction that takes the next
 * store-wide revision, writes the row and appends the event, so the event log
 * is exactly the sequence of committed changes.
 */
import type { Host } from '../domain/placement.js';
import type { Machine, MachinePatch, Phase, Sizes } from '../domain/types.js';

export type Dialect = 'sqlite' | 'postgres';

/** One committed change, as the event log keeps it. */
export interface StoredEvent {
  readonly revision: number;
  readonly machineId: string;
  readonly orgId: string;
  readonly phase: Phase;
  /** LifecycleResponse JSON, one line. */
  readonly body: string;
  readonly endsStream: boolean;
  readonly committedAt: number;
}

/** Reads available inside a mutation's transaction (consistent with its commit). */
export interface TxReader {
  hosts(): Promise<Host[]>;
  /** Allocated capacity per host, leaving out what `exclude` (as the decision sees it) holds. */
  allocations(exclude: Machine | null): Promise<Map<string, Sizes>>;
}

export interface Decision<T> {
  readonly patch: MachinePatch | null;
  readonly result: T;
}

export interface MutationResult<T> {
  /** The machine after the commit (or as decided on, when nothing was committed); undefined if absent. */
  readonly machine: Machine | undefined;
  readonly event: StoredEvent | null;
  readonly result: T;
}

export interface ApiKeyRecord {
  readonly keyId: string;
  readonly orgId: string;
  readonly prefix: string;
  readonly scope: 'admin' | 'user';
  readonly name: string;
  readonly createdAt: number;
  readonly revokedAt: number | null;
}

export interface StoredResponse {
  readonly statusCode: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}

/**
 * The response of an idempotent request (one holding its Idempotency-Key
 * claim), recorded in the transaction of the change it makes: a retry after
 * that commit replays it, even if the process died before answering.
 */
export interface KeptResponse {
  readonly orgId: string;
  readonly key: string;
  /** The response, from the machine as committed and its event (null when nothing changed). */
  respond(machine: Machine, event: StoredEvent | null): StoredResponse;
}

export type IdempotencyClaim =
  | { readonly kind: 'claimed' }
  | { readonly kind: 'replay'; readonly response: StoredResponse }
  | { readonly kind: 'mismatch'; readonly storedHash: string }
  | { readonly kind: 'in_flight' };

export interface ListPage {
  readonly machines: Machine[];
  readonly hasMore: boolean;
}

export interface CompactionPolicy {
  /** Newest events always kept per machine. */
  readonly keepPerMachine: number;
  /** Older events than this are dropped beyond keepPerMachine. */
  readonly maxAgeMs: number;
}

export type CommitListener = (events: readonly StoredEvent[]) => void;

/** Commits made by other processes on the same database (PostgreSQL LISTEN/NOTIFY). */
export interface RemoteCommits {
  /**
   * Calls `onRevision` for each revision another process commits, and
   * `onListen` each time the subscription is (re)established: after a
   * reconnect the caller must catch up from the log, as notifications sent
   * meanwhile are lost. Returns a function that stops listening.
   */
  listen(onRevision: (revision: number) => void, onListen: () => void): Promise<() => Promise<void>>;
}

export interface Store {
  readonly dialect: Dialect;
  /** Present when other processes may commit to the same database. */
  readonly remoteCommits: RemoteCommits | undefined;
  close(): Promise<void>;

  // Organisations and API keys.
  ensureOrg(orgId: string, name: string, now: number): Promise<void>;
  insertApiKey(rec: ApiKeyRecord & { keyHash: string }): Promise<void>;
  findApiKeyByHash(keyHash: string): Promise<ApiKeyRecord | undefined>;
  listApiKeys(orgId?: string): Promise<ApiKeyRecord[]>;
  revokeApiKey(keyId: string, now: number): Promise<boolean>;
  countApiKeys(): Promise<number>;
  /** True for exactly one caller per name, ever (first-start work when replicas start together). */
  claimOnce(name: string): Promise<boolean>;

  // Machines.
  getMachine(machineId: string): Promise<Machine | undefined>;
  listMachines(orgId: string, afterId: string | null, limit: number): Promise<ListPage>;
  /** Ids of machines that may need the reconciler (not converged, or running with autosleep). */
  listActiveMachineIds(): Promise<string[]>;
  listMachineIdsInPhase(phase: Machine['phase']): Promise<string[]>;
  /** Machines placed on a host in any of these phases (start-up recovery). */
  listPlacedMachines(phases: readonly Machine['phase'][]): Promise<Machine[]>;
  /** `lease`: the creating replica drives the new machine (PostgreSQL mode). `kept`: see KeptResponse. */
  insertMachine(
    machine: Omit<Machine, 'revision' | 'lastProgressAt' | 'logCompactedRevision'>,
    lease?: { owner: string; until: number },
    kept?: KeptResponse,
  ): Promise<{ machine: Machine; event: StoredEvent }>;
  /**
   * `planned`: the machine as the caller read it. While the stored row is
   * still that one (same revision and activity), `decide` sees it and the
   * row is not read again; once the row moved on, `decide` runs again on the
   * row as stored. Either way the decision is committed only against the row
   * it was made on. `kept`: see KeptResponse (not recorded when `decide` refuses).
   */
  mutateMachine<T>(
    machineId: string,
    decide: (current: Machine | undefined, tx: TxReader) => Promise<Decision<T>> | Decision<T>,
    planned?: Machine,
    kept?: KeptResponse,
  ): Promise<MutationResult<T>>;
  /** Records activity (for autosleep) without a revision: it is not part of the machine's observable state. */
  touchActivity(machineId: string, now: number): Promise<void>;

  // Leases (PostgreSQL mode: which replica drives a machine).
  /** Takes or renews the lease when free, expired or already ours. Fenced in SQL: true only if we hold it now. */
  claimMachine(machineId: string, owner: string, now: number, ttlMs: number): Promise<boolean>;
  /** Extends every lease `owner` holds; returns their machine ids. */
  renewLeases(owner: string, now: number, ttlMs: number): Promise<string[]>;
  /** Machines with work whose lease is free or expired (their driver died or never claimed). */
  listClaimable(owner: string, now: number): Promise<string[]>;
  releaseLeases(owner: string): Promise<void>;

  // Event log.
  headRevision(): Promise<number>;
  readEvents(afterRevision: number, limit: number): Promise<StoredEvent[]>;
  readMachineEvents(machineId: string, afterRevision: number, limit: number): Promise<StoredEvent[]>;
  compactEvents(policy: CompactionPolicy, now: number): Promise<number>;
  purgeDestroyed(destroyedBefore: number): Promise<number>;
  /** Called after every commit, in revision order, with the events it appended. */
  onCommit(listener: CommitListener): void;

  // Hosts.
  upsertHosts(hosts: readonly Host[], now: number): Promise<void>;
  listHosts(): Promise<Host[]>;

  // Idempotency keys.
  claimIdempotencyKey(orgId: string, key: string, requestHash: string, now: number, leaseMs: number): Promise<IdempotencyClaim>;
  completeIdempotencyKey(orgId: string, key: string, response: StoredResponse): Promise<void>;
  releaseIdempotencyKey(orgId: string, key: string): Promise<void>;
  purgeIdempotencyKeys(createdBefore: number): Promise<number>;
}
