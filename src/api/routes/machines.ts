/**
 * The eight Machine Lifecycle operations but the stream (routes/status-stream.ts).
 * Each handler: validate -> domain decision -> one store commit -> respond.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { parseDuration } from '../../domain/durations.js';
import { ApiError, invalidArgument, machineNotFound } from '../../domain/errors.js';
import { newMachineId } from '../../domain/ids.js';
import type { LifecycleAction, MutationDecision, UpdateRequest } from '../../domain/lifecycle.js';
import { acceptedMachine, decideAction, decideUpdate, isConverged } from '../../domain/lifecycle.js';
import { fits, validateSizes, ZERO_SIZES } from '../../domain/sizes.js';
import { fitsAnyHost, freeCapacity } from '../../domain/placement.js';
import type { Machine, Sizes } from '../../domain/types.js';
import { toLifecycleResponse, toMachineListItem } from '../../domain/types.js';
import type { Store, StoredEvent, StoredResponse, TxReader } from '../../store/store.js';
import { keptResponse, keptWithChange } from '../idempotency.js';
import { authOf } from '../auth.js';
import { decodeCursor, encodeCursor, pageBody, pageLimit } from '../pagination.js';
import type { CreateMachineRequest, ListQuery, MachineParams, UpdateMachineRequest } from '../schemas.js';
import * as S from '../schemas.js';

export interface MachineRoutesDeps {
  readonly store: Store;
  readonly defaultAutosleepSeconds: number;
  readonly clock: () => number;
  /** PostgreSQL mode: new machines are leased to this replica, which took the request. */
  readonly leaseOwner?: { readonly owner: string; readonly ttlMs: number };
}

const TAGS = ['Machine Lifecycle'];

const lifecycleResponses = { 200: S.LifecycleResponse, 202: S.LifecycleResponse, ...S.errorResponses };

export function etagOf(m: Machine): string {
  return `"${m.revision}"`;
}

/** Loads a machine of the caller's org; another org's machine does not exist. */
export async function loadMachine(store: Store, request: FastifyRequest, machineId: string): Promise<Machine> {
  const m = await store.getMachine(machineId);
  if (m === undefined || m.orgId !== authOf(request).orgId) throw machineNotFound();
  return m;
}

/** `If-Match`: quoted, bare or `*`; a stale one is REVISION_MISMATCH. */
export function checkIfMatch(request: FastifyRequest, m: Machine): void {
  const raw = request.headers['if-match'];
  if (raw === undefined) return;
  const value = (Array.isArray(raw) ? raw[0] : raw)?.trim() ?? '';
  if (value === '*') return;
  const provided = value.replace(/^W\//, '').replace(/^"(.*)"$/, '$1');
  if (!/^\d+$/.test(provided)) {
    throw invalidArgument({ 'header.if-match': 'must be a revision, e.g. "42", or *' }, 'invalid If-Match');
  }
  if (Number(provided) !== m.revision) {
    throw new ApiError('REVISION_MISMATCH', 'revision mismatch', {
      details: { expected_revision: String(m.revision), provided_revision: provided },
    });
  }
}

function parseAutosleep(value: string | undefined, details: Record<string, string>): number | undefined {
  if (value === undefined) return undefined;
  const parsed = parseDuration(value);
  if ('error' in parsed) {
    details['body.autosleep'] = parsed.error;
    return undefined;
  }
  return parsed.seconds;
}

/**
 * A lifecycle operation's response, as sent and as kept for an idempotent
 * replay. `event`: the commit that produced `m`, whose body is the same
 * LifecycleResponse already serialised.
 */
function lifecycleReply(m: Machine, status: 200 | 202, event: StoredEvent | null): StoredResponse {
  return {
    statusCode: status,
    headers: { 'content-type': 'application/json; charset=utf-8', etag: etagOf(m) },
    body: event !== null ? event.body : JSON.stringify(toLifecycleResponse(m)),
  };
}

function send(reply: FastifyReply, r: StoredResponse): FastifyReply {
  return reply.code(r.statusCode).headers(r.headers).send(r.body);
}

/** Whether new sizes fit where the machine is (its host), or anywhere when unplaced. */
async function checkCapacity(tx: TxReader, m: Machine, next: Sizes): Promise<void> {
  const hosts = await tx.hosts();
  if (m.hostId !== null) {
    const host = hosts.find((h) => h.hostId === m.hostId);
    if (host !== undefined) {
      const free = freeCapacity(host, (await tx.allocations(m)).get(host.hostId) ?? ZERO_SIZES);
      // A sleeping machine only holds storage now, but must fit to wake on its host.
      if (!fits(next, free)) throw capacityExceeded(next);
      return;
    }
  }
  if (!fitsAnyHost(hosts, next)) throw capacityExceeded(next);
}

function capacityExceeded(s: Sizes): ApiError {
  return new ApiError('CAPACITY_EXCEEDED', `no host can give ${s.vcpu} vCPU, ${s.memoryMib} MiB, ${s.storageGib} GiB`);
}

export function registerMachineRoutes(app: FastifyInstance, deps: MachineRoutesDeps): void {
  const { store, clock } = deps;

  app.get<{ Querystring: ListQuery }>(
    '/v1/machines',
    { schema: { operationId: 'listMachines', summary: 'List machines', tags: TAGS, querystring: S.ListQuery, response: { 200: S.MachineListResponse, ...S.errorResponses } } },
    async (request) => {
      const limit = pageLimit(request.query.limit);
      const after = decodeCursor('dm', request.query.cursor, /^dm-[0-9a-f-]{36}$/);
      const page = await store.listMachines(authOf(request).orgId, after, limit);
      const items = page.machines.map(toMachineListItem);
      const last = page.machines[page.machines.length - 1];
      return pageBody(items, page.hasMore && last !== undefined ? encodeCursor('dm', last.machineId) : null);
    },
  );

  app.post<{ Body: CreateMachineRequest }>(
    '/v1/machines',
    {
      config: { idempotent: true },
      schema: { operationId: 'createMachine', summary: 'Create machine', tags: TAGS, body: S.CreateMachineRequest, response: lifecycleResponses },
    },
    async (request, reply) => {
      const body = request.body;
      const details = validateSizes(body);
      const autosleep = parseAutosleep(body.autosleep, details);
      if (Object.keys(details).length > 0) throw invalidArgument(details);
      const sizes: Sizes = { vcpu: body.vcpu, memoryMib: body.memory_mib, storageGib: body.storage_gib };
      if (!fitsAnyHost(await store.listHosts(), sizes)) throw capacityExceeded(sizes);
      const now = clock();
      const { machine, event } = await store.insertMachine(
        acceptedMachine({
          machineId: newMachineId(now),
          orgId: authOf(request).orgId,
          sizes,
          autosleepSeconds: autosleep ?? deps.defaultAutosleepSeconds,
          now,
        }),
        deps.leaseOwner === undefined ? undefined : { owner: deps.leaseOwner.owner, until: now + deps.leaseOwner.ttlMs },
        keptResponse(request, (m, e) => lifecycleReply(m, 202, e)),
      );
      keptWithChange(request);
      return send(reply, lifecycleReply(machine, 202, event));
    },
  );

  app.get<{ Params: MachineParams }>(
    '/v1/machines/:machine_id',
    { schema: { operationId: 'getMachine', summary: 'Get machine', tags: TAGS, params: S.MachineParams, response: { 200: S.LifecycleResponse, ...S.errorResponses } } },
    async (request, reply) => {
      const m = await loadMachine(store, request, request.params.machine_id);
      return reply.header('etag', etagOf(m)).send(toLifecycleResponse(m));
    },
  );

  app.patch<{ Params: MachineParams; Body: UpdateMachineRequest }>(
    '/v1/machines/:machine_id',
    {
      config: { idempotent: true },
      schema: { operationId: 'patchMachine', summary: 'Update machine', tags: TAGS, params: S.MachineParams, body: S.UpdateMachineRequest, response: lifecycleResponses },
    },
    async (request, reply) => {
      const body = request.body;
      const details = validateSizes(body);
      const autosleepSeconds = parseAutosleep(body.autosleep, details);
      if (Object.keys(details).length > 0) throw invalidArgument(details);
      const update: UpdateRequest = { vcpu: body.vcpu, memoryMib: body.memory_mib, storageGib: body.storage_gib, autosleepSeconds };
      return mutate(request, reply, async (m, tx) => {
        const decision = decideUpdate(m, update, clock());
        const patch = decision.patch;
        if (patch !== null && (patch.vcpu !== m.vcpu || patch.memoryMib !== m.memoryMib || patch.storageGib !== m.storageGib)) {
          await checkCapacity(tx, m, { vcpu: patch.vcpu ?? m.vcpu, memoryMib: patch.memoryMib ?? m.memoryMib, storageGib: patch.storageGib ?? m.storageGib });
        }
        return decision;
      });
    },
  );

  const action = (name: LifecycleAction) => async (request: FastifyRequest<{ Params: MachineParams }>, reply: FastifyReply) =>
    mutate(request, reply, (m) => decideAction(m, name, clock()));

  app.delete<{ Params: MachineParams }>(
    '/v1/machines/:machine_id',
    { config: { idempotent: true }, schema: { operationId: 'deleteMachine', summary: 'Destroy machine', tags: TAGS, params: S.MachineParams, response: lifecycleResponses } },
    action('delete'),
  );
  app.post<{ Params: MachineParams }>(
    '/v1/machines/:machine_id/sleep',
    { config: { idempotent: true }, schema: { operationId: 'sleepMachine', summary: 'Sleep a running machine', tags: TAGS, params: S.MachineParams, response: lifecycleResponses } },
    action('sleep'),
  );
  app.post<{ Params: MachineParams }>(
    '/v1/machines/:machine_id/wake',
    { config: { idempotent: true }, schema: { operationId: 'wakeMachine', summary: 'Wake a sleeping machine', tags: TAGS, params: S.MachineParams, response: lifecycleResponses } },
    action('wake'),
  );

  /** Runs a decision inside the commit, fenced by If-Match and the org; answers 200 when converged, else 202. */
  async function mutate(
    request: FastifyRequest<{ Params: MachineParams }>,
    reply: FastifyReply,
    decide: (m: Machine, tx: TxReader) => Promise<MutationDecision> | MutationDecision,
  ): Promise<FastifyReply> {
    const orgId = authOf(request).orgId;
    const replyFor = (m: Machine, e: StoredEvent | null) => lifecycleReply(m, isConverged(m) ? 200 : 202, e);
    const { machine, event } = await store.mutateMachine(
      request.params.machine_id,
      async (m, tx) => {
        if (m === undefined || m.orgId !== orgId) throw machineNotFound();
        checkIfMatch(request, m);
        return { patch: (await decide(m, tx)).patch, result: undefined };
      },
      undefined,
      keptResponse(request, replyFor),
    );
    if (machine === undefined) throw machineNotFound();
    keptWithChange(request);
    // A no-op is still the user's activity (e.g. a wake that keeps a machine awake).
    if (event === null) await store.touchActivity(machine.machineId, clock());
    return send(reply, replyFor(machine, event));
  }
}
