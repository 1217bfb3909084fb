/**
 * The six Machine Executions operations. Each loads the machine in the
 * caller's org first (another org's machine does not exist), then the
 * execution under it; the execution service does the work.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ApiError, invalidArgument } from '../../domain/errors.js';
import type { Execution, ExecutionOutputResponse } from '../../domain/executions.js';
import { toEventWire, toExecutionResponse, validateCreate } from '../../domain/executions.js';
import type { ExecutionService } from '../../executions/service.js';
import type { Store } from '../../store/store.js';
import type { CreateExecutionRequest, ExecutionParams } from '../execution-schemas.js';
import * as E from '../execution-schemas.js';
import type { ListQuery, MachineParams } from '../schemas.js';
import * as S from '../schemas.js';
import { decodeCursor, encodeCursor, pageBody, pageLimit } from '../pagination.js';
import { loadMachine } from './machines.js';

export interface ExecutionRoutesDeps {
  readonly store: Store;
  readonly service: ExecutionService;
  readonly stdinLimitBytes: number;
}

const TAGS = ['Machine Lifecycle', 'Machine Executions'];


export function registerExecutionRoutes(app: FastifyInstance, deps: ExecutionRoutesDeps): void {
  const { store, service } = deps;

  /** The execution under the caller's machine; anything else does not exist. */
  async function loadExecution(request: FastifyRequest<{ Params: ExecutionParams }>): Promise<Execution> {
    const m = await loadMachine(store, request, request.params.machine_id);
    const e = await service.get(request.params.execution_id);
    if (e === undefined || e.machineId !== m.machineId) throw new ApiError('EXECUTION_NOT_FOUND', 'execution not found');
    return e;
  }

  app.post<{ Params: MachineParams; Body: CreateExecutionRequest }>(
    '/v1/machines/:machine_id/executions',
    {
      config: { idempotent: true },
      schema: {
        operationId: 'createMachineExecution',
        summary: 'Create execution',
        tags: TAGS,
        params: S.MachineParams,
        body: E.CreateExecutionRequest,
        response: { 200: E.ExecutionResponse, ...S.errorResponses },
      },
    },
    async (request) => {
      const details = validateCreate(request.body, deps.stdinLimitBytes);
      if (Object.keys(details).length > 0) throw invalidArgument(details);
      const m = await loadMachine(store, request, request.params.machine_id);
      return toExecutionResponse(await service.create(m, request.body));
    },
  );

  app.get<{ Params: MachineParams; Querystring: ListQuery }>(
    '/v1/machines/:machine_id/executions',
    {
      schema: {
        operationId: 'listMachineExecutions',
        summary: 'List executions',
        tags: TAGS,
        params: S.MachineParams,
        querystring: S.ListQuery,
        response: { 200: E.ExecutionListResponse, ...S.errorResponses },
      },
    },
    async (request) => {
      const limit = pageLimit(request.query.limit);
      const after = decodeCursor('ex', request.query.cursor, /^ex-[0-9a-f-]{36}$/);
      const m = await loadMachine(store, request, request.params.machine_id);
      const page = await service.list(m.machineId, after, limit);
      const items = page.items.map(toExecutionResponse);
      const last = page.items[page.items.length - 1];
      return pageBody(items, page.hasMore && last !== undefined ? encodeCursor('ex', last.executionId) : null);
    },
  );

  app.get<{ Params: ExecutionParams }>(
    '/v1/machines/:machine_id/executions/:execution_id',
    {
      schema: {
        operationId: 'getMachineExecution',
        summary: 'Get execution',
        tags: TAGS,
        params: E.ExecutionParams,
        response: { 200: E.ExecutionResponse, ...S.errorResponses },
      },
    },
    async (request) => toExecutionResponse(await loadExecution(request)),
  );

  app.delete<{ Params: ExecutionParams }>(
    '/v1/machines/:machine_id/executions/:execution_id',
    {
      config: { idempotent: true },
      schema: {
        operationId: 'deleteMachineExecution',
        summary: 'Delete execution',
        description: 'Cancels a pending or running execution (its whole process group is killed). An ended one is returned unchanged.',
        tags: TAGS,
        params: E.ExecutionParams,
        response: { 200: E.ExecutionResponse, ...S.errorResponses },
      },
    },
    async (request) => toExecutionResponse(await service.cancel(await loadExecution(request))),
  );

  app.get<{ Params: ExecutionParams; Querystring: ListQuery }>(
    '/v1/machines/:machine_id/executions/:execution_id/events',
    {
      schema: {
        operationId: 'listMachineExecutionEvents',
        summary: 'List execution events',
        tags: TAGS,
        params: E.ExecutionParams,
        querystring: S.ListQuery,
        response: { 200: E.ExecutionEventsResponse, ...S.errorResponses },
      },
    },
    async (request) => {
      const limit = pageLimit(request.query.limit);
      const after = Number(decodeCursor('seq', request.query.cursor, /^\d{1,15}$/) ?? 0);
      const e = await loadExecution(request);
      const page = await service.events(e.executionId, after, limit);
      const items = page.items.map(toEventWire);
      const lastSeq = page.items[page.items.length - 1]?.sequence ?? after;
      // While it has not ended, more events will come: the cursor lets a follower poll for them.
      const more = page.hasMore || !page.ended;
      return pageBody(items, more ? encodeCursor('seq', String(lastSeq)) : null);
    },
  );

  app.get<{ Params: ExecutionParams }>(
    '/v1/machines/:machine_id/executions/:execution_id/output',
    {
      schema: {
        operationId: 'getMachineExecutionOutput',
        summary: 'Get execution output',
        tags: TAGS,
        params: E.ExecutionParams,
        response: { 200: E.ExecutionOutputResponse, ...S.errorResponses },
      },
    },
    async (request): Promise<ExecutionOutputResponse> => {
      const e = await loadExecution(request);
      const { stdout, stderr } = await service.output(e);
      return {
        execution_id: e.executionId,
        stdout,
        stderr,
        stdout_bytes: e.stdoutBytes,
        stderr_bytes: e.stderrBytes,
        stdout_truncated: e.stdoutTruncated,
        stderr_truncated: e.stderrTruncated,
      };
    },
  );
}
