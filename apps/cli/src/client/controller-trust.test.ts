// Host-name checking against a controller certificate when its CA is pinned.
import type { PeerCertificate } from 'node:tls';
import { describe, expect, it } from 'vitest';
import { pinnedServerIdentity } from './controller-trust.ts';

const controllerCert = { subject: { CN: 'fleet-controller' }, subjectaltname: 'DNS:fleet-controller, DNS:localhost, IP Address:127.0.0.1' } as unknown as PeerCertificate;
const otherCert = { subject: { CN: 'www.example.org' }, subjectaltname: 'DNS:www.example.org' } as unknown as PeerCertificate;

describe('pinnedServerIdentity', () => {
  it('accepts the URL host when the certificate names it', () => {
    expect(pinnedServerIdentity('localhost', controllerCert)).toBeUndefined();
    expect(pinnedServerIdentity('127.0.0.1', controllerCert)).toBeUndefined();
  });

  it('accepts an address missing from a fleet controller certificate (the pin proves whose it is), as workers do', () => {
    expect(pinnedServerIdentity('10.1.2.3', controllerCert)).toBeUndefined();
    expect(pinnedServerIdentity('fleet.internal', controllerCert)).toBeUndefined();
  });

  it('still refuses a certificate that names neither the host nor fleet-controller', () => {
    expect(pinnedServerIdentity('10.1.2.3', otherCert)).toBeInstanceOf(Error);
  });
});
