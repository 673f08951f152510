import { describe, expect, it } from 'vitest';
import { apiCertificateNames, apiTlsEnabled, isLoopback } from './api-tls.ts';

describe('API TLS mode', () => {
  it('auto is plain HTTP only on loopback addresses', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', 'localhost']) expect(apiTlsEnabled('auto', host), host).toBe(false);
    for (const host of ['0.0.0.0', '::', '10.0.0.5', 'fleet.example.com']) expect(apiTlsEnabled('auto', host), host).toBe(true);
  });

  it('on and off are what they say, whatever the address', () => {
    expect(apiTlsEnabled('on', '127.0.0.1')).toBe(true);
    expect(apiTlsEnabled('off', '0.0.0.0')).toBe(false);
    expect(isLoopback('128.0.0.1')).toBe(false);
  });

  it('puts --api-hostname values and a concrete listen address in the certificate, not wildcards', () => {
    expect(apiCertificateNames('0.0.0.0', ['fleet.example.com'])).toEqual(['fleet.example.com']);
    expect(apiCertificateNames('10.0.0.5', [])).toEqual(['10.0.0.5']);
    expect(apiCertificateNames('127.0.0.1', [])).toEqual([]);
  });
});
