import { describe, expect, it } from 'vitest';
import { allocationOf, allocationsByHost, chooseHost, fitsAnyHost, type Host } from '../../src/domain/placement.js';
import type { Phase, Sizes } from '../../src/domain/types.js';
import { machine } from './fixtures.js';

const host = (hostId: string, vcpu: number, memoryMib: number, storageGib: number, ready = true): Host => ({
  hostId,
  capacity: { vcpu, memoryMib, storageGib },
  ready,
});
const sizes = (vcpu: number, memoryMib: number, storageGib: number): Sizes => ({ vcpu, memoryMib, storageGib });
const NONE = new Map<string, Sizes>();
const SMALL = sizes(1, 1024, 10);

describe('chooseHost', () => {
  it('picks a host the request fits on', () => {
    expect(chooseHost([host('h1', 4, 8192, 100)], NONE, SMALL, null)).toBe('h1');
  });

  it('a request exactly the free capacity fits', () => {
    expect(chooseHost([host('h1', 1, 1024, 10)], NONE, SMALL, null)).toBe('h1');
  });

  it('no host when nothing fits (any one dimension short is enough)', () => {
    const hosts = [host('cpu', 0.75, 8192, 100), host('mem', 4, 1023, 100), host('disk', 4, 8192, 9)];
    expect(chooseHost(hosts, NONE, SMALL, null)).toBeNull();
  });

  it('no host when there are no hosts', () => {
    expect(chooseHost([], NONE, SMALL, null)).toBeNull();
  });

  it('counts what is already allocated on a host', () => {
    const allocated = new Map([['h1', sizes(3.5, 1024, 10)]]);
    expect(chooseHost([host('h1', 4, 8192, 100)], allocated, SMALL, null)).toBeNull();
    expect(chooseHost([host('h1', 4, 8192, 100)], allocated, sizes(0.5, 1024, 10), null)).toBe('h1');
  });

  it('skips hosts that are not ready, even the preferred one', () => {
    const hosts = [host('down', 64, 65_536, 1000, false), host('up', 2, 2048, 20)];
    expect(chooseHost(hosts, NONE, SMALL, null)).toBe('up');
    expect(chooseHost(hosts, NONE, SMALL, 'down')).toBe('up');
    expect(chooseHost([host('down', 64, 65_536, 1000, false)], NONE, SMALL, null)).toBeNull();
  });

  it('the preferred host wins when the request fits there, even with less free vCPU', () => {
    const hosts = [host('big', 64, 65_536, 1000), host('home', 2, 2048, 20), host('other', 32, 65_536, 1000)];
    expect(chooseHost(hosts, NONE, SMALL, 'home')).toBe('home');
  });

  it('falls back to another host when the preferred one is full', () => {
    const hosts = [host('home', 2, 2048, 20), host('other', 4, 8192, 100)];
    const allocated = new Map([['home', sizes(2, 0, 0)]]);
    expect(chooseHost(hosts, allocated, SMALL, 'home')).toBe('other');
  });

  it('an unknown preferred host is ignored', () => {
    expect(chooseHost([host('h1', 4, 8192, 100)], NONE, SMALL, 'gone')).toBe('h1');
  });

  it('spreads load: the host with the most free vCPU, whatever the order', () => {
    const hosts = [host('a', 8, 65_536, 1000), host('b', 8, 65_536, 1000), host('c', 8, 65_536, 1000)];
    const allocated = new Map([
      ['a', sizes(6, 0, 0)],
      ['b', sizes(2, 0, 0)],
      ['c', sizes(4, 0, 0)],
    ]);
    expect(chooseHost(hosts, allocated, SMALL, null)).toBe('b');
    expect(chooseHost([...hosts].reverse(), allocated, SMALL, null)).toBe('b');
  });

  it('the most free vCPU among the hosts that fit', () => {
    const hosts = [host('roomy-cpu-no-disk', 64, 65_536, 5), host('fits', 2, 2048, 20)];
    expect(chooseHost(hosts, NONE, SMALL, null)).toBe('fits');
  });
});

describe('allocationOf', () => {
  const full = sizes(2, 2048, 20);
  const table: ReadonlyArray<[phase: Phase, hostId: string | null, held: Sizes]> = [
    ['accepted', null, sizes(0, 0, 0)],
    ['placement_pending', null, sizes(0, 0, 0)],
    ['starting', 'h1', full],
    ['running', 'h1', full],
    ['stopping', 'h1', full],
    ['sleeping', 'h1', sizes(0, 0, 20)], // storage only
    ['failed', 'h1', sizes(0, 0, 20)],
    ['failed', null, sizes(0, 0, 0)],
    ['destroying', 'h1', sizes(0, 0, 20)],
    ['destroyed', 'h1', sizes(0, 0, 0)],
    ['destroyed', null, sizes(0, 0, 0)],
  ];

  it.each(table)('%s on %s holds %o', (phase, hostId, held) => {
    expect(allocationOf({ phase, hostId, vcpu: 2, memoryMib: 2048, storageGib: 20 })).toEqual(held);
  });

  it('a sleeping machine holds only its storage', () => {
    const held = allocationOf(machine({ phase: 'sleeping', desiredState: 'sleeping', applied: null }));
    expect(held.vcpu).toBe(0);
    expect(held.memoryMib).toBe(0);
    expect(held.storageGib).toBe(10);
  });
});

describe('allocationsByHost', () => {
  const machines = [
    machine({ machineId: 'dm-1', hostId: 'h1', phase: 'running', vcpu: 1, memoryMib: 1024, storageGib: 10 }),
    machine({ machineId: 'dm-2', hostId: 'h1', phase: 'sleeping', vcpu: 2, memoryMib: 2048, storageGib: 20 }),
    machine({ machineId: 'dm-3', hostId: 'h2', phase: 'starting', vcpu: 0.5, memoryMib: 512, storageGib: 5 }),
    machine({ machineId: 'dm-4', hostId: null, phase: 'placement_pending', vcpu: 8, memoryMib: 8192, storageGib: 80 }),
  ];

  it('sums each host', () => {
    const byHost = allocationsByHost(machines, null);
    expect(byHost).toEqual(
      new Map([
        ['h1', sizes(1, 1024, 30)],
        ['h2', sizes(0.5, 512, 5)],
      ]),
    );
  });

  it('leaves out the given machine', () => {
    const byHost = allocationsByHost(machines, 'dm-1');
    expect(byHost.get('h1')).toEqual(sizes(0, 0, 20));
    expect(byHost.get('h2')).toEqual(sizes(0.5, 512, 5));
  });

  it('a host whose only machine is excluded has nothing allocated', () => {
    expect(allocationsByHost(machines, 'dm-3').get('h2') ?? sizes(0, 0, 0)).toEqual(sizes(0, 0, 0));
  });

  it('the machine being placed does not count against its own host', () => {
    const hosts = [host('h1', 2, 2048, 30)];
    const waking = machine({ machineId: 'dm-w', hostId: 'h1', phase: 'sleeping', vcpu: 2, memoryMib: 2048, storageGib: 30 });
    const request = sizes(2, 2048, 30);
    expect(chooseHost(hosts, allocationsByHost([waking], 'dm-w'), request, 'h1')).toBe('h1');
    expect(chooseHost(hosts, allocationsByHost([waking], null), request, 'h1')).toBeNull();
  });
});

describe('fitsAnyHost', () => {
  const hosts = [host('a', 4, 8192, 100), host('b', 16, 4096, 50)];

  it('true when some single host could hold the request', () => {
    expect(fitsAnyHost(hosts, sizes(4, 8192, 100))).toBe(true);
    expect(fitsAnyHost(hosts, sizes(16, 4096, 50))).toBe(true);
  });

  it('false when no single host could, even if their sum could', () => {
    expect(fitsAnyHost(hosts, sizes(16, 8192, 50))).toBe(false);
    expect(fitsAnyHost(hosts, sizes(20, 1024, 10))).toBe(false);
  });

  it('false with no hosts', () => {
    expect(fitsAnyHost([], sizes(0.25, 32, 1))).toBe(false);
  });
});
