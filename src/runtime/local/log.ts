/** The logging the local runtime needs (pino fits). */
export interface Logger {
  info(...a: unknown[]): void;
  warn(...a: unknown[]): void;
}

export const NOOP_LOGGER: Logger = { info: () => undefined, warn: () => undefined };
