// Makes `npm start` and `npm test` work from a fresh clone: installs the
// locked dependencies when they are missing or stale, prepares the host for
// the local runtime when run as root on Linux (HANGAR_SKIP_HOST_SETUP=1 to
// skip), and compiles.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';

function run(cmd, args) {
  const r = spawnSync(cmd, args, { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

const installed = 'node_modules/.package-lock.json';
if (!existsSync(installed) || statSync(installed).mtimeMs < statSync('package-lock.json').mtimeMs) {
  run('npm', ['ci', '--no-audit', '--no-fund']);
}
if (process.platform === 'linux' && process.getuid?.() === 0 && !process.env.HANGAR_SKIP_HOST_SETUP) {
  run('bash', ['scripts/setup-host.sh']);
}
run(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json']);
