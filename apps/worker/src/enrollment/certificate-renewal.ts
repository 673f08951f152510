// Renews the worker's client certificate before it expires, so that a fleet enrolled on
// one day does not fall off the controller all at once a year later.
//
// When less than a third of the certificate's lifetime is left, the worker makes a fresh
// key and CSR, calls RenewCertificate authenticated by its current certificate, checks
// the answer (a certificate for the new key, valid now), stores the pair crash-safely and
// hands new channel credentials to the link, which uses them from its next connection.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { createKeyAndCsr } from '@fleet/pki';
import { loadFleetProto, type RenewCertificateResponse__Output } from '@fleet/proto';
import type { Logger } from 'pino';
import type { CredentialStore } from '../config/credentials.ts';
import { controllerChannelOptions } from '../link/link.ts';

/** The certificate's validity and when it should be renewed (a third of its lifetime before expiry). */
export function renewalSchedule(certPem: string): { notBefore: Date; notAfter: Date; renewAt: Date } {
  const cert = new X509Certificate(certPem);
  const notBefore = new Date(cert.validFrom);
  const notAfter = new Date(cert.validTo);
  const lifetime = notAfter.getTime() - notBefore.getTime();
  return { notBefore, notAfter, renewAt: new Date(notAfter.getTime() - lifetime / 3) };
}

export class RenewalError extends Error {
  override readonly name = 'RenewalError';
}

/** Checks the controller's answer before anything is stored. */
export function checkRenewedCertificate(certPem: string, keyPem: string, now = new Date()): X509Certificate {
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(certPem);
  } catch (error) {
    throw new RenewalError(`the controller returned an unreadable certificate: ${(error as Error).message}`);
  }
  if (!cert.checkPrivateKey(createPrivateKey(keyPem))) throw new RenewalError('the controller returned a certificate for another key');
  if (new Date(cert.validFrom) > new Date(now.getTime() + 5 * 60_000) || new Date(cert.validTo) <= now) {
    throw new RenewalError(`the controller returned a certificate that is not valid now (${cert.validFrom} .. ${cert.validTo})`);
  }
  return cert;
}

export interface CertificateRenewerOptions {
  store: CredentialStore;
  /** Controller gRPC address, host:port; a function gives the one the link is connected to now. */
  address: string | (() => string);
  /** Called with the new channel credentials once the renewed pair is stored. */
  onRenewed(credentials: grpc.ChannelCredentials, notAfter: Date): void;
  logger: Logger;
  /** Longest wait between two looks at the certificate (default 1 h): a changed clock is noticed. */
  checkIntervalMs?: number;
  /** Wait before retrying a failed renewal (default 5 min). */
  retryMs?: number;
  /** Deadline of one RenewCertificate call (default 30 s). */
  timeoutMs?: number;
  now?: () => Date;
}

export class CertificateRenewer {
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<boolean> | undefined;
  #started = false;
  #stopped = false;

  constructor(private readonly options: CertificateRenewerOptions) {}

  /** Checks now, then again when the certificate falls due (looking at least hourly). */
  start(): void {
    if (this.#started || this.#stopped) return;
    this.#started = true;
    void this.checkNow();
  }

  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Renews when due. Resolves true when a new certificate was stored; never rejects. */
  checkNow(): Promise<boolean> {
    this.#running ??= this.#check()
      .then(({ renewed, nextCheckMs }) => {
        this.#schedule(nextCheckMs);
        return renewed;
      })
      .finally(() => (this.#running = undefined));
    return this.#running;
  }

  #schedule(delayMs: number): void {
    if (!this.#started || this.#stopped) return;
    clearTimeout(this.#timer);
    const max = this.options.checkIntervalMs ?? 3600_000;
    this.#timer = setTimeout(() => void this.checkNow(), Math.min(Math.max(delayMs, 1000), max));
    this.#timer.unref();
  }

  #now(): Date {
    return this.options.now?.() ?? new Date();
  }

  async #check(): Promise<{ renewed: boolean; nextCheckMs: number }> {
    const { store, logger: log } = this.options;
    const retryMs = this.options.retryMs ?? 5 * 60_000;
    try {
      const current = await store.load();
      const schedule = renewalSchedule(current.certPem);
      const now = this.#now();
      if (now < schedule.renewAt) {
        log.debug({ notAfter: schedule.notAfter.toISOString(), renewAt: schedule.renewAt.toISOString() }, 'client certificate not due for renewal');
        return { renewed: false, nextCheckMs: schedule.renewAt.getTime() - now.getTime() };
      }
      log.info({ notAfter: schedule.notAfter.toISOString() }, 'renewing the client certificate');
      const { keyPem, csrPem } = await createKeyAndCsr({ commonName: current.identity.name });
      const credentials = grpc.credentials.createSsl(Buffer.from(current.caPem), Buffer.from(current.keyPem), Buffer.from(current.certPem));
      const response = await this.#call(credentials, csrPem);
      const cert = checkRenewedCertificate(response.clientCertificatePem, keyPem, this.#now());
      if (this.#stopped) return { renewed: false, nextCheckMs: retryMs };
      await store.saveRenewed(keyPem, response.clientCertificatePem);
      const next = renewalSchedule(response.clientCertificatePem);
      log.info({ notAfter: next.notAfter.toISOString() }, 'client certificate renewed; the next connection uses it');
      this.options.onRenewed(grpc.credentials.createSsl(Buffer.from(current.caPem), Buffer.from(keyPem), Buffer.from(response.clientCertificatePem)), new Date(cert.validTo));
      return { renewed: true, nextCheckMs: next.renewAt.getTime() - this.#now().getTime() };
    } catch (error) {
      const e = error as Partial<grpc.ServiceError>;
      if (e.code === grpc.status.UNIMPLEMENTED) {
        log.warn('the controller cannot renew certificates (older version); re-enroll this worker before its certificate expires');
        return { renewed: false, nextCheckMs: this.options.checkIntervalMs ?? 3600_000 };
      }
      log.warn({ err: error, retryInMs: retryMs }, 'client certificate renewal failed; will try again');
      return { renewed: false, nextCheckMs: retryMs };
    }
  }

  #call(credentials: grpc.ChannelCredentials, csrPem: string): Promise<RenewCertificateResponse__Output> {
    const { WorkerService } = loadFleetProto();
    const address = typeof this.options.address === 'function' ? this.options.address() : this.options.address;
    const client = new WorkerService(address, credentials, controllerChannelOptions());
    return new Promise<RenewCertificateResponse__Output>((resolve, reject) => {
      client.RenewCertificate({ csrPem }, { deadline: Date.now() + (this.options.timeoutMs ?? 30_000) }, (error, response) => {
        client.close();
        if (error) reject(error);
        else if (!response?.clientCertificatePem) reject(new RenewalError('the controller answered RenewCertificate without a certificate'));
        else resolve(response);
      });
    });
  }
}
