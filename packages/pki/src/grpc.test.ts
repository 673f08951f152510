// The certificates must work with @grpc/grpc-js exactly as the controller and
// workers use them: server chain = server cert + CA, workers connect with
// ssl_target_name_override "fleet-controller" and (once enrolled) a client cert.
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  certificateFingerprint,
  createCertificateAuthority,
  createKeyAndCsr,
  fetchPinnedCaCertificate,
  fingerprintOfDer,
  issueServerCertificate,
  signClientCsr,
  type IssuedClientCertificate,
  type KeyAndCert,
} from './index.ts';

const echoService = {
  whoAmI: {
    path: '/fleet.pki.test.Echo/WhoAmI',
    requestStream: false,
    responseStream: false,
    requestSerialize: (b: Buffer) => b,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (b: Buffer) => b,
    responseDeserialize: (b: Buffer) => b,
  },
} satisfies grpc.ServiceDefinition;

const EchoClient = grpc.makeGenericClientConstructor(echoService, 'Echo');

/**
 * A static provider: requests client certificates but does not require them.
 * It MUST deliver updates asynchronously: grpc-js 1.14 subscribes to the
 * provider before registering the server's watcher, so an update delivered
 * synchronously inside add*Listener is lost and the server drops every
 * connection ("unloaded credentials"). See the last test in this file.
 */
class StaticProvider implements grpc.experimental.CertificateProvider {
  constructor(
    private readonly ca: Buffer,
    private readonly chain: Buffer,
    private readonly key: Buffer,
    private readonly deliver: (fn: () => void) => void = queueMicrotask,
  ) {}
  addCaCertificateListener(l: grpc.experimental.CaCertificateUpdateListener): void {
    this.deliver(() => l({ caCertificate: this.ca }));
  }
  removeCaCertificateListener(): void {}
  addIdentityCertificateListener(l: grpc.experimental.IdentityCertificateUpdateListener): void {
    this.deliver(() => l({ certificate: this.chain, privateKey: this.key }));
  }
  removeIdentityCertificateListener(): void {}
}

interface Running {
  port: number;
  stop(): void;
}

async function startGrpc(creds: grpc.ServerCredentials): Promise<Running> {
  const server = new grpc.Server();
  server.addService(echoService, {
    whoAmI: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const peer = call.getAuthContext()?.sslPeerCertificate;
      cb(null, Buffer.from(peer?.raw ? `${peer.subject.CN} ${fingerprintOfDer(peer.raw)}` : 'anonymous'));
    },
  });
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))));
  return { port, stop: () => server.forceShutdown() };
}

function call(port: number, creds: grpc.ChannelCredentials): Promise<string> {
  const client = new EchoClient(`127.0.0.1:${port}`, creds, { 'grpc.ssl_target_name_override': 'fleet-controller' });
  return new Promise<string>((resolve, reject) => {
    client.makeUnaryRequest(
      echoService.whoAmI.path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      Buffer.from('hi'),
      { deadline: Date.now() + 5000 },
      (err: grpc.ServiceError | null, res?: Buffer) => (err ? reject(err) : resolve(res!.toString())),
    );
  }).finally(() => client.close());
}

let ca: KeyAndCert;
let server: KeyAndCert;
let worker: { keyPem: string; issued: IssuedClientCertificate };
let chain: Buffer;

beforeAll(async () => {
  ca = await createCertificateAuthority({ commonName: 'Fleet test CA' });
  server = await issueServerCertificate(ca, { commonName: 'fleet-controller', dnsNames: [], ipAddresses: [] });
  const { keyPem, csrPem } = await createKeyAndCsr({ commonName: 'ignored' });
  worker = { keyPem, issued: await signClientCsr(ca, csrPem, { commonName: 'worker-grpc' }) };
  chain = Buffer.from(server.certPem + ca.certPem);
});

describe('with @grpc/grpc-js', () => {
  describe('ServerCredentials.createSsl(ca, [{cert_chain, private_key}], false)', () => {
    let srv: Running;
    beforeAll(async () => {
      srv = await startGrpc(grpc.ServerCredentials.createSsl(Buffer.from(ca.certPem), [{ cert_chain: chain, private_key: Buffer.from(server.keyPem) }], false));
    });
    afterAll(() => srv?.stop());

    it('serves a worker that trusts the CA and presents its client certificate', async () => {
      const res = await call(srv.port, grpc.credentials.createSsl(Buffer.from(ca.certPem), Buffer.from(worker.keyPem), Buffer.from(worker.issued.certPem)));
      // NB: with checkClientCertificate=false grpc-js does not even request a client
      // certificate, so the server cannot see who the worker is.
      expect(res).toBe('anonymous');
    });

    it('is refused by a client that trusts a different CA', async () => {
      const other = await createCertificateAuthority({ commonName: 'Other CA' });
      await expect(call(srv.port, grpc.credentials.createSsl(Buffer.from(other.certPem)))).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    });

    it('lets fetchPinnedCaCertificate pin the CA (ALPN h2)', async () => {
      const pem = await fetchPinnedCaCertificate({ host: '127.0.0.1', port: srv.port, expectedCaFingerprint: certificateFingerprint(ca.certPem) });
      expect(certificateFingerprint(pem)).toBe(certificateFingerprint(ca.certPem));
      expect(await call(srv.port, grpc.credentials.createSsl(Buffer.from(pem)))).toBe('anonymous');
    });
  });

  describe('ServerCredentials.createSsl(ca, pairs, true) (client certificate required)', () => {
    let srv: Running;
    beforeAll(async () => {
      srv = await startGrpc(grpc.ServerCredentials.createSsl(Buffer.from(ca.certPem), [{ cert_chain: chain, private_key: Buffer.from(server.keyPem) }], true));
    });
    afterAll(() => srv?.stop());

    it('accepts the issued client certificate and exposes CN + fingerprint', async () => {
      const res = await call(srv.port, grpc.credentials.createSsl(Buffer.from(ca.certPem), Buffer.from(worker.keyPem), Buffer.from(worker.issued.certPem)));
      expect(res).toBe(`worker-grpc ${worker.issued.fingerprint}`);
    });

    it('refuses a client without a certificate', async () => {
      await expect(call(srv.port, grpc.credentials.createSsl(Buffer.from(ca.certPem)))).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    });
  });

  describe('experimental.createCertificateProviderServerCredentials(p, p, false) (what the controller uses)', () => {
    let srv: Running;
    beforeAll(async () => {
      const provider = new StaticProvider(Buffer.from(ca.certPem), chain, Buffer.from(server.keyPem));
      srv = await startGrpc(grpc.experimental.createCertificateProviderServerCredentials(provider, provider, false));
    });
    afterAll(() => srv?.stop());

    it('sees an enrolled worker (CN and the fingerprint signClientCsr returned)', async () => {
      const res = await call(srv.port, grpc.credentials.createSsl(Buffer.from(ca.certPem), Buffer.from(worker.keyPem), Buffer.from(worker.issued.certPem)));
      expect(res).toBe(`worker-grpc ${worker.issued.fingerprint}`);
    });

    it('still serves an enrolling worker that has no client certificate yet', async () => {
      expect(await call(srv.port, grpc.credentials.createSsl(Buffer.from(ca.certPem)))).toBe('anonymous');
    });

    it('does not attribute a client certificate from another CA', async () => {
      const otherCa = await createCertificateAuthority({ commonName: 'Fleet test CA' });
      const { keyPem, csrPem } = await createKeyAndCsr({ commonName: 'x' });
      const rogue = await signClientCsr(otherCa, csrPem, { commonName: 'worker-grpc' });
      expect(await call(srv.port, grpc.credentials.createSsl(Buffer.from(ca.certPem), Buffer.from(keyPem), Buffer.from(rogue.certPem)))).toBe('anonymous');
    });

    it('(pitfall) a provider that calls its listeners synchronously leaves the server unable to accept connections', async () => {
      const sync = new StaticProvider(Buffer.from(ca.certPem), chain, Buffer.from(server.keyPem), (fn) => fn());
      const broken = await startGrpc(grpc.experimental.createCertificateProviderServerCredentials(sync, sync, false));
      try {
        await expect(call(broken.port, grpc.credentials.createSsl(Buffer.from(ca.certPem)))).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
      } finally {
        broken.stop();
      }
    });
  });
});
