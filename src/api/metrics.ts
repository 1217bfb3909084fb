/** Prometheus metrics (GET /metrics, admin scope). One registry per server, never the global one. */
import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { WatcherRegistry } from './sse/watcher-registry.js';

export class Metrics {
  readonly registry = new Registry();
  private readonly requests: Histogram<'method' | 'route' | 'status'>;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'hangar_' });
    this.requests = new Histogram({
      name: 'hangar_http_request_duration_seconds',
      help: 'HTTP requests by route and status',
      labelNames: ['method', 'route', 'status'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [this.registry],
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }

  registerHttp(app: FastifyInstance): void {
    app.addHook('onResponse', async (request, reply) => {
      this.requests.observe(
        { method: request.method, route: request.routeOptions.url ?? 'unknown', status: String(reply.statusCode) },
        reply.elapsedTime / 1000,
      );
    });
  }

  registerWatchers(watchers: WatcherRegistry): void {
    new Gauge({
      name: 'hangar_status_watchers',
      help: 'Open status streams',
      registers: [this.registry],
      collect() {
        this.set(watchers.size);
      },
    });
    new Counter({
      name: 'hangar_status_watchers_slow_disconnects_total',
      help: 'Status streams cut off for not reading',
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(watchers.stats.ended.slow);
      },
    });
  }

  /** A gauge read at scrape time. */
  gauge(name: string, help: string, read: () => number): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }
}
