export { createLocalRuntime, LocalRuntime, type LocalRuntimeOptions, type Logger, type SandboxInfo } from './local-runtime.js';
export { detectLocalSupport } from './support.js';
