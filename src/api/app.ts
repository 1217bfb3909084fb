/**
 * buildApp(deps): the HTTP API as a Fastify instance, with no port of its own,
 * so tests can `inject()` and the server can `listen()`.
 */
import fastifySwagger from '@fastify/swagger';
import { Ajv } from 'ajv';
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import Fastify, { LogController } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { ApiError } from '../domain/errors.js';
import type { ChangeFeed } from '../events/change-feed.js';
import type { Runtime } from '../runtime/runtime.js';
import type { Store } from '../store/store.js';
import { VERSION } from '../version.js';
import { Authenticator, requireAdmin } from './auth.js';
import { sendError, toApiError } from './error-mapping.js';
import { registerIdempotency } from './idempotency.js';
import type { Metrics } from './metrics.js';
import { registerMachineRoutes } from './routes/machines.js';
import { registerStatusStream } from './routes/status-stream.js';
import { WatcherRegistry } from './sse/watcher-registry.js';

export interface AppDeps {
  readonly config: Config;
  readonly store: Store;
  readonly feed: ChangeFeed;
  readonly runtime: Runtime;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly clock?: () => number;
  /** PostgreSQL mode: this replica's lease name, given to machines it creates. */
  readonly leaseOwner?: { readonly owner: string; readonly ttlMs: number };
  /** Extra /v1 routes (executions), registered after auth. */
  readonly extraRoutes?: (app: FastifyInstance) => void;
}

export interface HangarApp {
  readonly app: FastifyInstance;
  readonly watchers: WatcherRegistry;
}


/**
 * Bodies are validated as sent: no type coercion (a string "2" is not a vCPU
 * count), no stripping of unknown fields (they are a 400). Path, query and
 * headers arrive as strings and are coerced.
 */
function validators(): { body: Ajv; other: Ajv } {
  const common = { allErrors: true, strict: false, removeAdditional: false as const, useDefaults: false };
  const body = new Ajv({ ...common, coerceTypes: false });
  const other = new Ajv({ ...common, coerceTypes: true });
  // The reference's numeric formats are annotations (the type checks the value); date-time appears only in responses.
  for (const ajv of [body, other]) for (const format of ['int64', 'int32', 'double', 'date-time', 'uuid']) ajv.addFormat(format, true);
  return { body, other };
}

/** `/v1/machines/:machine_id/sleep` as a regular expression over concrete paths. */
function routePattern(url: string): RegExp {
  const source = url.split('/').map((part) => (part.startsWith(':') ? '[^/]+' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))).join('/');
  return new RegExp(`^${source}/?$`);
}

export async function buildApp(deps: AppDeps): Promise<HangarApp> {
  const { config, store, feed, log, metrics } = deps;
  const clock = deps.clock ?? Date.now;
  const app = Fastify({
    loggerInstance: log as FastifyBaseLogger,
    // Per-request log lines cost more than the request at thousands per second; metrics count them.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.api.bodyLimitBytes,
    return503OnClosing: true,
    forceCloseConnections: true,
  });

  const ajv = validators();
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? ajv.body : ajv.other).compile(schema));

  // Bodyless POSTs (sleep, wake) may still say application/json; an empty body is no body.
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch {
      done(new ApiError('INVALID_ARGUMENT', 'malformed JSON body', { details: { body: 'is not valid JSON' } }), undefined);
    }
  });

  await app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Hangar API (DCS Machines API compatible)', version: VERSION },
      components: {
        securitySchemes: {
          Bearer: { type: 'http', scheme: 'bearer' },
          ApiKeyAuth: { type: 'apiKey', in: 'header', name: 'x-api-key' },
        },
      },
      security: [{ Bearer: [] }, { ApiKeyAuth: [] }],
    },
  });

  const routes: { pattern: RegExp; method: string }[] = [];
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const method of methods) routes.push({ pattern: routePattern(route.url), method });
  });

  app.setErrorHandler((err, request, reply) => {
    const apiError = toApiError(err instanceof Error ? err : new Error(String(err)));
    if (apiError.code === 'INTERNAL') request.log.error({ err, url: request.url }, 'unhandled error');
    return sendError(reply, apiError);
  });

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0] ?? '';
    const known = routes.some((r) => r.pattern.test(path));
    return sendError(
      reply,
      known ? new ApiError('METHOD_NOT_ALLOWED', `${request.method} is not allowed on ${path}`) : new ApiError('NOT_FOUND', `no route for ${request.method} ${path}`),
    );
  });

  const authenticator = new Authenticator(store, config.api.authCacheMs, clock);
  app.decorateRequest('auth', null);
  app.addHook('onRequest', async (request: FastifyRequest) => {
    if (!request.url.startsWith('/v1/')) return;
    request.auth = await authenticator.authenticate(request.headers);
  });
  metrics.registerHttp(app);
  registerIdempotency(app, store, config.api.idempotencyLeaseMs, clock);

  const watchers = new WatcherRegistry(config.stream.bookmarkIntervalMs, () => feed.dispatchedRevision);
  metrics.registerWatchers(watchers);
  // A lost store: open streams end with an error frame; clients resume with Last-Event-ID once it is back.
  feed.onHealthChange((healthy) => {
    if (!healthy) watchers.failAll({ error_code: 'DEPENDENCY_UNAVAILABLE', message: 'store unavailable', retryable: true });
  });

  registerMachineRoutes(app, {
    store,
    defaultAutosleepSeconds: config.api.defaultAutosleepSeconds,
    clock,
    ...(deps.leaseOwner !== undefined ? { leaseOwner: deps.leaseOwner } : {}),
  });
  registerStatusStream(app, {
    store,
    feed,
    registry: watchers,
    retryMs: config.stream.retryMs,
    watcherBufferBytes: config.stream.watcherBufferBytes,
  });
  deps.extraRoutes?.(app);

  app.get('/healthz', { schema: { hide: true } }, async () => ({
    status: feed.isHealthy ? 'ok' : 'degraded',
    store: store.dialect,
    runtime: deps.runtime.kind,
    revision: String(feed.dispatchedRevision),
  }));
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  // Operators' metrics, admin scope. /metrics is outside /v1, so it authenticates itself.
  const serveMetrics = async (request: FastifyRequest, reply: FastifyReply) => {
    request.auth ??= await authenticator.authenticate(request.headers);
    requireAdmin(request);
    return reply.type(metrics.contentType).send(await metrics.render());
  };
  app.get('/metrics', { schema: { hide: true } }, serveMetrics);
  app.get('/v1/metrics', { schema: { hide: true } }, serveMetrics);

  // Open streams end with an error frame before the server stops accepting.
  app.addHook('preClose', async () => {
    watchers.failAll({ error_code: 'DEPENDENCY_UNAVAILABLE', message: 'server is shutting down', retryable: true });
    watchers.stop();
  });

  return { app, watchers };
}
