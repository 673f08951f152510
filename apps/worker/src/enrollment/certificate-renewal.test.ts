// Renewal timing and the checks on the controller's answer, with certificates from the real CA code.
import { createCertificateAuthority, createKeyAndCsr, signClientCsr } from '@fleet/pki';
import { describe, expect, it } from 'vitest';
import { checkRenewedCertificate, renewalSchedule, RenewalError } from './certificate-renewal.ts';

const DAY = 86_400_000;

describe('certificate renewal', () => {
  it('falls due when a third of the lifetime is left', async () => {
    const ca = await createCertificateAuthority({ commonName: 'test CA' });
    const { csrPem } = await createKeyAndCsr({ commonName: 'w' });
    const issued = await signClientCsr(ca, csrPem, { commonName: 'w', validDays: 30 });
    const s = renewalSchedule(issued.certPem);
    expect(s.notAfter.getTime()).toBe(issued.notAfter.getTime());
    const lifetime = s.notAfter.getTime() - s.notBefore.getTime();
    expect(s.notAfter.getTime() - s.renewAt.getTime()).toBeCloseTo(lifetime / 3, -3);
    // A 30-day certificate is renewed about 10 days before it expires.
    expect(Math.round((s.notAfter.getTime() - s.renewAt.getTime()) / DAY)).toBe(10);
  });

  it('accepts only a certificate for the new key that is valid now', async () => {
    const ca = await createCertificateAuthority({ commonName: 'test CA' });
    const mine = await createKeyAndCsr({ commonName: 'w' });
    const other = await createKeyAndCsr({ commonName: 'w' });
    const good = await signClientCsr(ca, mine.csrPem, { commonName: 'w' });
    expect(checkRenewedCertificate(good.certPem, mine.keyPem).subject).toContain('CN=w');
    const forOther = await signClientCsr(ca, other.csrPem, { commonName: 'w' });
    expect(() => checkRenewedCertificate(forOther.certPem, mine.keyPem)).toThrow(/another key/);
    expect(() => checkRenewedCertificate(good.certPem, mine.keyPem, new Date(Date.now() + 400 * DAY))).toThrow(/not valid now/);
    expect(() => checkRenewedCertificate('-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n', mine.keyPem)).toThrow(RenewalError);
  });
});
