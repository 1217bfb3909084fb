/**
 * Placement: which host a machine goes on. Pure: the store supplies hosts and
 * what is already allocated, inside the transaction that commits the choice,
 * so two decisions can never book the same capacity.
 */
import type { Machine, Phase, Sizes } from './types.js';
import { addSizes, fits, ZERO_SIZES } from './sizes.js';

export interface Host {
  readonly hostId: string;
  readonly capacity: Sizes;
  readonly ready: boolean;
}

/** Phases whose machines hold CPU and memory on their host. Sleeping ones keep only storage. */
const COMPUTE_PHASES: ReadonlySet<Phase> = new Set(['starting', 'running', 'stopping']);

/** What a placed machine holds on its host in its current phase. */
export function allocationOf(m: Pick<Machine, 'phase' | 'hostId' | 'vcpu' | 'memoryMib' | 'storageGib'>): Sizes {
  if (m.hostId === null || m.phase === 'destroyed') return ZERO_SIZES;
  if (COMPUTE_PHASES.has(m.phase)) return { vcpu: m.vcpu, memoryMib: m.memoryMib, storageGib: m.storageGib };
  return { vcpu: 0, memoryMib: 0, storageGib: m.storageGib };
}

export function freeCapacity(host: Host, allocated: Sizes): Sizes {
  return {
    vcpu: host.capacity.vcpu - allocated.vcpu,
    memoryMib: host.capacity.memoryMib - allocated.memoryMib,
    storageGib: host.capacity.storageGib - allocated.storageGib,
  };
}

/**
 * Chooses a host for `request`. `allocated` must exclude the machine itself.
 * Prefers `preferredHostId` (a waking machine's storage is there), then the
 * host with the most free vCPU, spreading load.
 */
export function chooseHost(
  hosts: readonly Host[],
  allocated: ReadonlyMap<string, Sizes>,
  request: Sizes,
  preferredHostId: string | null,
): string | null {
  let best: { hostId: string; freeVcpu: number } | null = null;
  for (const host of hosts) {
    if (!host.ready) continue;
    const free = freeCapacity(host, allocated.get(host.hostId) ?? ZERO_SIZES);
    if (!fits(request, free)) continue;
    if (host.hostId === preferredHostId) return host.hostId;
    if (best === null || free.vcpu > best.freeVcpu) best = { hostId: host.hostId, freeVcpu: free.vcpu };
  }
  return best?.hostId ?? null;
}

/** Sums allocations per host, leaving out `excludeMachineId`. */
export function allocationsByHost(
  machines: Iterable<Pick<Machine, 'machineId' | 'phase' | 'hostId' | 'vcpu' | 'memoryMib' | 'storageGib'>>,
  excludeMachineId: string | null,
): Map<string, Sizes> {
  const byHost = new Map<string, Sizes>();
  for (const m of machines) {
    if (m.machineId === excludeMachineId || m.hostId === null) continue;
    byHost.set(m.hostId, addSizes(byHost.get(m.hostId) ?? ZERO_SIZES, allocationOf(m)));
  }
  return byHost;
}

/** The largest any single host could ever give: a request above it can never be placed. */
export function fitsAnyHost(hosts: readonly Host[], request: Sizes): boolean {
  return hosts.some((h) => fits(request, h.capacity));
}
