// Component tests for the create form's image suggestions, the plots page's loading state and the
// workers table's sticky actions column (issue 16), rendered to static HTML with react-dom/server.
import { renderToStaticMarkup } from 'react-dom/server';
import { describe, expect, it } from 'vitest';
import type { ImageSummaryObject, StatsSeries, WorkerObject } from '../api/types.ts';
import { PlotsStatus } from '../pages/PlotsPage.tsx';
import { DataTable } from './DataTable.tsx';
import { ImageField, QEMU_GUEST_IMAGE, imageChoices, imageHint } from './ImageField.tsx';

function worker(name: string, over: Partial<WorkerObject> = {}): WorkerObject {
  return {
    id: `wid-${name}`,
    name,
    status: 'online',
    connected: true,
    paused: false,
    hostname: `${name}.local`,
    os: 'linux',
    arch: 'x64',
    version: '0.1.0',
    labels: {},
    drivers: ['qemu'],
    capacity: { cpus: 4, memoryMib: 8192, vmSlots: 4, macosSlots: 0, natAddresses: 0 },
    used: { cpus: 0, memoryMib: 0, vms: 0, macosVms: 0, natAddresses: 0 },
    lastSeenAt: '2025-01-01T00:59:55.000Z',
    certificateExpiresAt: '2025-12-01T00:00:00.000Z',
    createdAt: '2024-12-31T00:00:00.000Z',
    ...over,
  } as WorkerObject;
}

function image(reference: string, workers: { name: string; state: string }[]): ImageSummaryObject {
  return { digest: `sha256:${'a'.repeat(64)}`, reference, format: 'fleet-qemu', sizeBytes: 1, workers: workers.map((w) => ({ ...w, inUse: 0, lastUsedAt: null, progress: null })) };
}

describe('image choices for the create form', () => {
  it('fleet-guest for qemu workers first, then the registry images some worker holds ready', () => {
    const choices = imageChoices(
      [worker('mac-1', { drivers: ['vz'] }), worker('lin-1')],
      [image('reg.example/b:1', [{ name: 'lin-1', state: 'ready' }]), image('reg.example/a:2', [{ name: 'lin-1', state: 'ready' }, { name: 'mac-1', state: 'ready' }]), image('reg.example/pulling:1', [{ name: 'lin-1', state: 'pulling' }])],
    );
    expect(choices.map((c) => c.value)).toEqual([QEMU_GUEST_IMAGE, 'reg.example/a:2', 'reg.example/b:1']);
    expect(choices[1]!.detail).toBe('cached on lin-1, mac-1');
    expect(choices[0]!.detail).toMatch(/built into qemu workers \(lin-1\)/);
  });

  it('no qemu worker and no cached image: nothing offered, and the hint says what to type', () => {
    const choices = imageChoices([worker('mac-1', { drivers: ['vz'] })], []);
    expect(choices).toEqual([]);
    expect(imageHint(choices, false)).toMatch(/no worker holds an image yet/);
    expect(imageChoices(null, null)).toEqual([]);
  });

  it('renders a free text input with the choices as suggestions', () => {
    const html = renderToStaticMarkup(
      <ImageField inputProps={{ id: 'vm-image', name: 'image' }} choices={imageChoices([worker('lin-1')], [])} value="fleet-guest" onChange={() => {}} loading={false} />,
    );
    expect(html).toMatch(/<input id="vm-image"[^>]*list="vm-image-choices"[^>]*>/);
    expect(html).toMatch(/<input [^>]*name="image"/);
    expect(html).toMatch(/<input [^>]*value="fleet-guest"/);
    expect(html).toContain('<datalist id="vm-image-choices"');
    expect(html).toContain('<option value="fleet-guest"');
  });
});

describe('plots page status', () => {
  it('a loading indicator until the first answer', () => {
    const html = renderToStaticMarkup(<PlotsStatus data={null} error={null} />);
    expect(html).toContain('role="status"');
    expect(html).toContain('aria-busy="true"');
    expect(html).toMatch(/Loading the controller&#x27;s time series/);
  });

  it('says when there is no sample yet, and nothing once there are samples', () => {
    const empty = { intervalSeconds: 5, samples: [] } as unknown as StatsSeries;
    expect(renderToStaticMarkup(<PlotsStatus data={empty} error={null} />)).toMatch(/No samples yet/);
    const some = { intervalSeconds: 5, samples: [{ t: 1 }] } as unknown as StatsSeries;
    expect(renderToStaticMarkup(<PlotsStatus data={some} error={null} />)).toBe('');
    expect(renderToStaticMarkup(<PlotsStatus data={null} error="boom" />)).toBe('');
  });
});

describe('DataTable sticky columns', () => {
  it('marks a sticky column on its header and cells', () => {
    const html = renderToStaticMarkup(
      <DataTable caption="t" rows={[{ n: 'a' }]} rowKey={(r) => r.n} empty="none" columns={[{ key: 'n', header: 'Name', cell: (r) => r.n }, { key: 'actions', header: 'Actions', cell: () => 'x', sticky: true }]} />,
    );
    expect(html).toContain('<th scope="col" class="sticky-end">Actions</th>');
    expect(html).toContain('<td class="sticky-end">x</td>');
  });
});

describe('network mode and custom MAC (issue 18)', () => {
  it('the create form refuses what the API refuses, in its words', async () => {
    const { validateVmCreate } = await import('../pages/VmCreatePage.tsx');
    const base = { name: 'web-1', image: 'img' };
    expect(validateVmCreate({ ...base, mac: '02:AA:BB:CC:DD:EE', network: { mode: 'host-only', allow: ['@host'] } })).toEqual({});
    expect(validateVmCreate({ ...base, mac: '01:00:5e:00:00:01' }).mac).toMatch(/multicast/);
    expect(validateVmCreate({ ...base, mac: 'ff:ff:ff:ff:ff:ff' }).mac).toMatch(/broadcast/);
    expect(validateVmCreate({ ...base, mac: '02-00-5e-10-00-01' }).mac).toMatch(/separate the six octets with ":"/);
    expect(validateVmCreate({ ...base, network: { mode: 'none', allow: ['10.0.0.0/8'] } }).networkMode).toMatch(/no NIC to apply allow to/);
    expect(validateVmCreate({ ...base, network: { mode: 'none' }, mac: '02:00:00:00:00:01' }).networkMode).toMatch(/no NIC to give a MAC to/);
    expect(validateVmCreate({ ...base, network: { mode: 'bridged' } }).networkMode).toBeDefined();
  });

  it('the VM page shows the mode and where the MAC comes from; the worker page its networks', async () => {
    const { macText, networkMode } = await import('../pages/VmDetailPage.tsx');
    const { workerNetworks } = await import('../pages/WorkerDetailPage.tsx');
    const vm = (over: Record<string, unknown>) => ({ mac: null, macSource: null, network: { mode: 'nat', allow: [], block: [], blockLocal: false }, ...over }) as never;
    expect(networkMode(vm({ network: { mode: 'host-only', allow: [], block: [], blockLocal: false } }))).toMatch(/^host-only/);
    expect(networkMode(vm({ network: { allow: [], block: [], blockLocal: false } }))).toMatch(/^nat/);
    expect(macText(vm({ mac: '02:00:00:00:00:01', macSource: 'custom' }))).toBe('02:00:00:00:00:01 (custom)');
    expect(macText(vm({ network: { mode: 'none', allow: [], block: [], blockLocal: false } }))).toBe('— (no NIC)');
    expect(workerNetworks(worker('w'))).toEqual([['Networks', 'not reported: NAT only (an older worker, or the synthetic driver)']]);
    expect(workerNetworks(worker('w', { networks: [{ mode: 'host-only', subnet: '192.168.128.0/24', gateway: '192.168.128.1', addresses: 253, interface: 'fleet-ho0', used: 2 }] }))).toEqual([
      ['Network host-only', '192.168.128.0/24, gateway 192.168.128.1 on fleet-ho0; 2 / 253 addresses in use'],
    ]);
  });
});
