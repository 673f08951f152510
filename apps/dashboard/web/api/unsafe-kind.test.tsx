// The create form's browser-side check of labels and selectors (plain JSON Schema in the API).
import { describe, expect, it } from 'vitest';
import { validateVmCreate } from '../pages/VmCreatePage.tsx';

const body = (over: Record<string, unknown> = {}) => ({ name: 'web-1', image: 'fleet-guest', os: 'linux', cpus: 1, memoryMib: 256, diskGib: 10, priority: 0, restartPolicy: 'never', disconnectPolicy: 'reschedule', ...over });

describe('validateVmCreate with labels', () => {
  it('accepts Kubernetes-style labels and a selector', () => {
    expect(validateVmCreate(body({ labels: { team: 'ci', 'example.com/tier': 'a-1' }, selector: { pool: 'fast' }, network: { allow: ['10.0.0.0/8'] } }))).toEqual({});
  });

  it('refuses bad keys, nested values and too many labels, naming the field', () => {
    expect(Object.keys(validateVmCreate(body({ labels: { 'bad key': 'x' } })))).toEqual(['labels']);
    expect(Object.keys(validateVmCreate(body({ labels: { team: { nested: 'x' } } })))).toEqual(['labels']);
    expect(Object.keys(validateVmCreate(body({ selector: { '': 'x' } })))).toEqual(['selector']);
    const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v']));
    expect(Object.keys(validateVmCreate(body({ labels: many })))).toEqual(['labels']);
  });
});
