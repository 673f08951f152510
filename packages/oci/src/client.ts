import { createHash, type Hash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import tls from 'node:tls';
import { parseChallenges, type AuthChallenge } from './auth.ts';
import { OciError, errnoCode, transportError } from './errors.ts';
import { RegionWriter, hashRegion } from './region.ts';
import { isDigest, isTag, registryProblem, repositoryProblem } from './reference.ts';

/** How to reach and authenticate to one registry. */
export interface RegistryAccess {
  /** Plain HTTP instead of HTTPS. Only ever used when set explicitly. */
  insecure?: boolean;
  /** Extra CA certificate(s) (PEM) trusted in addition to the system roots. */
  caPem?: string;
  username?: string;
  password?: string;
}

export interface RegistryClientOptions extends RegistryAccess {
  /** host[:port], e.g. "127.0.0.1:5000". */
  registry: string;
  userAgent?: string;
  /** Per request: how long the socket may stay idle. Default 30 s. */
  timeoutMs?: number;
  /** Largest manifest or index accepted. Default 4 MiB (the distribution spec's recommendation). */
  maxManifestBytes?: number;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
  urls?: string[];
}

export interface FetchedManifest {
  /** sha256 of `bytes`, computed locally. */
  digest: string;
  mediaType: string;
  bytes: Buffer;
  json: Record<string, unknown>;
}

export const MANIFEST_MEDIA_TYPES = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;

export interface TransferProgress {
  bytesDone: number;
  bytesTotal: number;
}

const ACCEPT_MANIFESTS = [
  MANIFEST_MEDIA_TYPES.ociIndex,
  MANIFEST_MEDIA_TYPES.ociManifest,
  MANIFEST_MEDIA_TYPES.dockerList,
  MANIFEST_MEDIA_TYPES.dockerManifest,
].join(', ');

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_MANIFEST = 4 * 1024 * 1024;
const MAX_REDIRECTS = 5;
const DOWNLOAD_RETRIES = 5;
const UPLOAD_ATTEMPTS = 3;
/** Error bodies are only read for their message; cap what we buffer. */
const MAX_ERROR_BODY = 64 * 1024;
const MAX_TOKEN_BODY = 1024 * 1024;
const PROGRESS_INTERVAL_MS = 100;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE']);

/** Internal: a reused keep-alive socket turned out to be closed. */
class StaleSocket extends Error {}

type Body =
  | { kind: 'buffer'; data: Buffer }
  /** `onSent` gets the bytes sent so far by the current attempt (a resend after a 401 starts at 0). */
  | { kind: 'file'; path: string; size: number; onSent?: (n: number) => void };

interface Op {
  method: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'DELETE';
  /** Path on the registry ("/v2/…") or an absolute URL (upload locations). */
  url: string | URL;
  headers?: Record<string, string>;
  body?: Body;
  /** Token scope, e.g. "repository:fleet/guest:pull". Undefined for /v2/. */
  scope?: string;
  /** What this request is about, for messages: "manifest fleet/guest:1.0". */
  subject: string;
  signal?: AbortSignal;
}

interface Answer {
  res: http.IncomingMessage;
  /** URL that produced `res` (after redirects). */
  url: URL;
}

interface CachedToken {
  value: string;
  expiresAt: number;
}

function mediaTypeOf(contentType: string | undefined): string | undefined {
  if (!contentType) return undefined;
  const mt = contentType.split(';')[0]!.trim().toLowerCase();
  return mt === '' ? undefined : mt;
}

function sha256(bytes: Buffer): string {
  return 'sha256:' + createHash('sha256').update(bytes).digest('hex');
}

function header(res: http.IncomingMessage, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function contentLength(res: http.IncomingMessage): number | undefined {
  const v = header(res, 'content-length');
  if (v === undefined || !/^[0-9]+$/.test(v)) return undefined;
  return Number(v);
}

/** Reads the whole body but throws (and stops reading) past `max` bytes. */
async function readCapped(res: http.IncomingMessage, max: number, tooLarge: () => OciError): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    n += chunk.length;
    if (n > max) {
      res.destroy();
      throw tooLarge();
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, n);
}

/** Throws away a response body so its keep-alive socket can be reused. */
async function drain(res: http.IncomingMessage): Promise<void> {
  if (res.complete || res.destroyed) return;
  try {
    let n = 0;
    for await (const chunk of res as AsyncIterable<Buffer>) {
      n += chunk.length;
      if (n > MAX_ERROR_BODY) {
        res.destroy();
        return;
      }
    }
  } catch {
    // The body was only being discarded.
  }
}

function abortedError(what: string, signal: AbortSignal | undefined): OciError {
  const reason: unknown = signal?.reason;
  const why = reason instanceof Error ? `: ${reason.message}` : typeof reason === 'string' ? `: ${reason}` : '';
  return new OciError('aborted', `${what} was aborted${why}`, { cause: reason });
}

function sleep(ms: number, signal: AbortSignal | undefined, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortedError(what, signal));
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortedError(what, signal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

interface Throttled {
  (n: number, final?: boolean): void;
  /** Drops a pending trailing call (the transfer ended). */
  cancel(): void;
}

/**
 * Calls `fn` at most every PROGRESS_INTERVAL_MS. A suppressed value is delivered
 * later (trailing edge) so a stalled transfer still shows its last position; `final`
 * values go out at once.
 */
export function throttle(fn: ((n: number) => void) | undefined): Throttled {
  let last = 0;
  let pending: number | undefined;
  let timer: NodeJS.Timeout | undefined;
  const cancel = (): void => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    pending = undefined;
  };
  const emit = (n: number): void => {
    cancel();
    last = Date.now();
    fn!(n);
  };
  const t = ((n: number, final?: boolean) => {
    if (!fn) return;
    if (final || Date.now() - last >= PROGRESS_INTERVAL_MS) return emit(n);
    pending = n;
    timer ??= setTimeout(() => {
      timer = undefined;
      if (pending !== undefined) emit(pending);
    }, PROGRESS_INTERVAL_MS - (Date.now() - last));
    timer.unref();
  }) as Throttled;
  t.cancel = cancel;
  return t;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Validates one descriptor out of a manifest/index; `where` names it for messages. */
export function parseDescriptor(v: unknown, where: string): Descriptor {
  if (!isRecord(v)) throw new OciError('protocol', `${where} is not a JSON object`);
  const { mediaType, digest, size } = v;
  if (typeof mediaType !== 'string' || mediaType === '') throw new OciError('protocol', `${where} has no mediaType`);
  if (typeof digest !== 'string' || !isDigest(digest)) throw new OciError('protocol', `${where} has digest ${JSON.stringify(digest)}; only sha256:<64 hex> digests are supported`);
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw new OciError('protocol', `${where} has an invalid size ${JSON.stringify(size)}`);
  const d: Descriptor = { mediaType, digest, size };
  if (isRecord(v.annotations)) {
    const a: Record<string, string> = {};
    for (const [k, val] of Object.entries(v.annotations)) if (typeof val === 'string') a[k] = val;
    d.annotations = a;
  }
  if (isRecord(v.platform) && typeof v.platform.os === 'string' && typeof v.platform.architecture === 'string') {
    d.platform = { os: v.platform.os, architecture: v.platform.architecture };
    if (typeof v.platform.variant === 'string') d.platform.variant = v.platform.variant;
  }
  if (typeof v.artifactType === 'string') d.artifactType = v.artifactType;
  if (Array.isArray(v.urls)) d.urls = v.urls.filter((u): u is string => typeof u === 'string');
  return d;
}

function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/** Registry error codes from a `{"errors":[{"code":…,"message":…}]}` body. */
function registryErrors(body: Buffer): { codes: string[]; text: string } {
  const fallback = body.toString('utf8', 0, Math.min(body.length, 300)).replace(/\s+/g, ' ').trim();
  try {
    const parsed: unknown = JSON.parse(body.toString('utf8'));
    if (isRecord(parsed) && Array.isArray(parsed.errors)) {
      const codes: string[] = [];
      const texts: string[] = [];
      for (const e of parsed.errors) {
        if (!isRecord(e)) continue;
        if (typeof e.code === 'string') codes.push(e.code);
        const msg = typeof e.message === 'string' ? e.message : '';
        texts.push([typeof e.code === 'string' ? e.code : '', msg].filter(Boolean).join(': '));
      }
      return { codes, text: texts.join('; ') };
    }
  } catch {
    // Not JSON: use the raw text.
  }
  return { codes: [], text: fallback };
}

/**
 * Client for one registry speaking the OCI distribution protocol (/v2/ API).
 * Not tied to a repository: every call names it. Safe to use concurrently.
 */
export class RegistryClient {
  readonly registry: string;
  private readonly base: URL;
  private readonly insecure: boolean;
  private readonly username: string | undefined;
  private readonly password: string | undefined;
  private readonly userAgent: string;
  private readonly timeoutMs: number;
  private readonly maxManifestBytes: number;
  private readonly httpAgent: http.Agent;
  private readonly httpsAgent: https.Agent;

  /** Learned from the first 401: which scheme the registry wants. */
  private authMode: 'none' | 'basic' | 'bearer' = 'none';
  private bearer: { realm: string; service?: string } | undefined;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly tokenFetches = new Map<string, Promise<string>>();

  constructor(opts: RegistryClientOptions) {
    const why = registryProblem(opts.registry);
    if (why) throw new OciError('bad-reference', `invalid registry address: ${why}`);
    this.registry = opts.registry;
    this.insecure = opts.insecure === true;
    // Docker Hub's API does not live at the name people write.
    const apiHost = opts.registry === 'docker.io' ? 'registry-1.docker.io' : opts.registry;
    this.base = new URL(`${this.insecure ? 'http' : 'https'}://${apiHost}`);
    this.username = opts.username;
    this.password = opts.password;
    if ((this.username === undefined) !== (this.password === undefined)) {
      throw new OciError('unauthorized', `credentials for registry ${this.registry} need both a username and a password`);
    }
    this.userAgent = opts.userAgent ?? 'fleet-oci/1';
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.maxManifestBytes = opts.maxManifestBytes ?? DEFAULT_MAX_MANIFEST;
    this.httpAgent = new http.Agent({ keepAlive: true });
    const ca = opts.caPem ? [...tls.rootCertificates, opts.caPem] : [...tls.rootCertificates];
    this.httpsAgent = new https.Agent({ keepAlive: true, ca });
  }

  /** Closes idle keep-alive sockets. The client stays usable. */
  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }

  // ---------------------------------------------------------------- public API

  /** GET /v2/ with authentication: checks that the registry is reachable and the credentials work. */
  async ping(): Promise<void> {
    const op: Op = { method: 'GET', url: '/v2/', subject: 'the registry API (/v2/)' };
    const { res, url } = await this.call(op);
    if (res.statusCode === 200) return drain(res);
    if (res.statusCode === 404) {
      await drain(res);
      throw new OciError('protocol', `${this.where(url)} does not serve the registry API at /v2/ (404): is ${this.registry} a container registry?`, { status: 404 });
    }
    throw await this.statusError(res, url, op);
  }

  /** HEADs a manifest by tag or digest and returns its descriptor (digest, media type, size). */
  async resolve(repository: string, reference: string): Promise<Descriptor> {
    this.checkRepository(repository);
    this.checkManifestReference(repository, reference);
    const op: Op = {
      method: 'HEAD',
      url: `/v2/${repository}/manifests/${reference}`,
      headers: { accept: ACCEPT_MANIFESTS },
      scope: `repository:${repository}:pull`,
      subject: this.manifestSubject(repository, reference),
    };
    const { res, url } = await this.call(op);
    if (res.statusCode !== 200) throw await this.statusError(res, url, op);
    await drain(res);
    const digest = header(res, 'docker-content-digest');
    const mediaType = mediaTypeOf(header(res, 'content-type'));
    const size = contentLength(res);
    if (digest !== undefined && isDigest(digest) && mediaType && size !== undefined && isManifestType(mediaType)) {
      if (isDigest(reference) && digest !== reference) {
        throw new OciError('digest-mismatch', `registry ${this.registry} answered for ${op.subject} with a manifest of digest ${digest}`);
      }
      return { mediaType, digest, size };
    }
    // Some registries omit Docker-Content-Digest on HEAD: fetch and hash the manifest instead.
    const m = await this.getManifest(repository, reference);
    return { mediaType: m.mediaType, digest: m.digest, size: m.bytes.length };
  }

  /** GETs a manifest or index, size-capped and verified against the digest it was asked by. */
  async getManifest(repository: string, reference: string): Promise<FetchedManifest> {
    this.checkRepository(repository);
    this.checkManifestReference(repository, reference);
    const subject = this.manifestSubject(repository, reference);
    const op: Op = {
      method: 'GET',
      url: `/v2/${repository}/manifests/${reference}`,
      headers: { accept: ACCEPT_MANIFESTS },
      scope: `repository:${repository}:pull`,
      subject,
    };
    const { res, url } = await this.call(op);
    if (res.statusCode !== 200) throw await this.statusError(res, url, op);
    const max = this.maxManifestBytes;
    const tooLarge = (): OciError =>
      new OciError('too-large', `${subject} on registry ${this.registry} is larger than ${max} bytes (the manifest size limit); refusing to read it`);
    const declared = contentLength(res);
    if (declared !== undefined && declared > max) {
      res.destroy();
      throw tooLarge();
    }
    const bytes = await this.guard(url, readCapped(res, max, tooLarge));
    const digest = sha256(bytes);
    if (isDigest(reference) && digest !== reference) {
      throw new OciError('digest-mismatch', `registry ${this.registry} sent a manifest for ${subject} whose bytes hash to ${digest}, not ${reference}`);
    }
    const claimed = header(res, 'docker-content-digest');
    if (claimed !== undefined && claimed.startsWith('sha256:') && claimed !== digest) {
      throw new OciError('digest-mismatch', `registry ${this.registry} sent a manifest for ${subject} labelled ${claimed} whose bytes hash to ${digest}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(bytes.toString('utf8'));
    } catch (err) {
      throw new OciError('protocol', `${subject} on registry ${this.registry} is not valid JSON: ${(err as Error).message}`, { cause: err });
    }
    if (!isRecord(json)) throw new OciError('protocol', `${subject} on registry ${this.registry} is not a JSON object`);
    let mediaType = mediaTypeOf(header(res, 'content-type'));
    if (mediaType === undefined || mediaType === 'application/json' || mediaType === 'application/octet-stream' || mediaType === 'text/plain') {
      // A generic Content-Type tells nothing: go by the document itself.
      if (typeof json.mediaType === 'string') mediaType = json.mediaType;
      else if (Array.isArray(json.manifests)) mediaType = MANIFEST_MEDIA_TYPES.ociIndex;
      else if (isRecord(json.config) && Array.isArray(json.layers)) mediaType = MANIFEST_MEDIA_TYPES.ociManifest;
      else throw new OciError('unsupported-media-type', `${subject} on registry ${this.registry} has no recognisable media type`);
    }
    return { digest, mediaType, bytes, json };
  }

  /**
   * Fetches the image manifest for `platform`: directly, or through an OCI index /
   * Docker manifest list (returned as `index`).
   */
  async getImageManifest(repository: string, reference: string, platform: Platform): Promise<{ index?: FetchedManifest; manifest: FetchedManifest }> {
    const top = await this.getManifest(repository, reference);
    const subject = this.manifestSubject(repository, reference);
    if (isImageManifestType(top.mediaType)) return { manifest: top };
    if (top.mediaType !== MANIFEST_MEDIA_TYPES.ociIndex && top.mediaType !== MANIFEST_MEDIA_TYPES.dockerList) {
      throw new OciError('unsupported-media-type', `${subject} on registry ${this.registry} has media type ${top.mediaType}, which is neither an image manifest nor an index`);
    }
    const list = top.json.manifests;
    if (!Array.isArray(list)) throw new OciError('protocol', `index ${subject} on registry ${this.registry} has no "manifests" array`);
    const entries = list.map((e, i) => parseDescriptor(e, `entry ${i} of index ${subject}`));
    const chosen = selectPlatform(entries, platform);
    if (!chosen) {
      const offered = entries.filter((e) => e.platform && e.platform.os !== 'unknown').map((e) => formatPlatform(e.platform!));
      throw new OciError(
        'no-platform',
        `${subject} on registry ${this.registry} has no image for ${formatPlatform(platform)}; it offers ${offered.length ? [...new Set(offered)].join(', ') : 'no platform-specific images'}`,
      );
    }
    const manifest = await this.getManifest(repository, chosen.digest);
    if (!isImageManifestType(manifest.mediaType)) {
      throw new OciError('unsupported-media-type', `the ${formatPlatform(platform)} entry ${chosen.digest} of ${subject} has media type ${manifest.mediaType}, not an image manifest`);
    }
    return { index: top, manifest };
  }

  /** Reads a small blob (a config) into memory, verified against `desc`. */
  async getBlob(repository: string, desc: Descriptor, maxBytes: number): Promise<Buffer> {
    this.checkRepository(repository);
    this.checkDescriptor(desc);
    const subject = `blob ${desc.digest} in ${repository}`;
    if (desc.size > maxBytes) throw new OciError('too-large', `${subject} on registry ${this.registry} is ${desc.size} bytes; at most ${maxBytes} are accepted here`);
    const op: Op = { method: 'GET', url: `/v2/${repository}/blobs/${desc.digest}`, scope: `repository:${repository}:pull`, subject };
    const { res, url } = await this.call(op);
    if (res.statusCode !== 200) throw await this.statusError(res, url, op);
    const bytes = await this.guard(
      url,
      readCapped(res, desc.size, () => new OciError('too-large', `registry ${this.registry} sent more than the ${desc.size} bytes the descriptor of ${subject} declares`)),
    );
    if (bytes.length !== desc.size) throw new OciError('protocol', `registry ${this.registry} sent ${bytes.length} bytes for ${subject}; the descriptor says ${desc.size}`);
    const digest = sha256(bytes);
    if (digest !== desc.digest) throw new OciError('digest-mismatch', `${subject} from registry ${this.registry} hashes to ${digest}, expected ${desc.digest}`);
    return bytes;
  }

  /**
   * Downloads a blob to `destFile`, resumable and verified: bytes go to
   * `destFile.partial` (resumed with Range on a later call or after a dropped
   * connection); only a blob whose size and sha256 match `desc` is renamed to
   * `destFile`. An existing `destFile` is trusted as already verified.
   */
  async downloadBlob(
    repository: string,
    desc: Descriptor,
    destFile: string,
    opts: { signal?: AbortSignal; onProgress?: (bytesDone: number) => void } = {},
  ): Promise<void> {
    this.checkRepository(repository);
    this.checkDescriptor(desc);
    if (await fileExists(destFile)) return;
    const subject = `blob ${desc.digest} in ${repository}`;
    const partial = destFile + '.partial';
    const progress = throttle(opts.onProgress);
    let fh: FileHandle | undefined;
    try {
      fh = await fsp.open(partial, 'a');
      const file = fh;
      const existing = (await file.stat()).size;
      const state = await hashExisting(partial, existing, desc.size);
      if (state.have === 0 && existing > 0) await file.truncate(0);
      // Bytes left by an earlier attempt might be damaged (crash before fsync): if the
      // result does not verify, start over once before reporting a mismatch.
      let resumedOldBytes = state.have > 0;
      progress(state.have);
      const restart = async (): Promise<void> => {
        await file.truncate(0);
        state.hash = createHash('sha256');
        state.have = 0;
        progress(0, true);
      };
      // The file is opened for appending: every write lands at its end, which is `state.have`.
      const sink = async (chunk: Buffer): Promise<void> => void (await file.write(chunk));
      for (;;) {
        let actual: string;
        try {
          actual = await this.receiveBlob(repository, desc, subject, state, sink, restart, progress, opts.signal);
        } catch (err) {
          if (err instanceof OciError && (err.code === 'too-large' || err.code === 'protocol')) {
            // What we hold came from a registry that breaks its own descriptor: do not keep it.
            await file.close().catch(() => {});
            fh = undefined;
            await fsp.rm(partial, { force: true });
          }
          throw err;
        }
        if (actual === desc.digest) break;
        if (resumedOldBytes) {
          resumedOldBytes = false;
          await restart();
          continue;
        }
        await file.close();
        fh = undefined;
        await fsp.rm(partial, { force: true });
        throw new OciError('digest-mismatch', `${subject} from registry ${this.registry} hashes to ${actual}, expected ${desc.digest}; the download was discarded`);
      }
      await file.sync();
      await file.close();
      fh = undefined;
      await fsp.rename(partial, destFile);
      await syncDir(path.dirname(destFile));
      progress(desc.size, true);
    } catch (err) {
      progress.cancel();
      if (fh) {
        // Keep a partial only if it holds something worth resuming.
        const size = await fh.stat().then((st) => st.size, () => -1);
        await fh.close().catch(() => {});
        fh = undefined;
        if (size === 0) await fsp.rm(partial, { force: true }).catch(() => {});
      }
      throw this.localError(err, subject, 'the partial download is kept');
    } finally {
      await fh?.close().catch(() => {});
    }
  }

  /**
   * Downloads a blob straight into `fh` at [offset, offset + desc.size), verifying its sha256
   * as the bytes arrive: for files assembled from pieces (a fleet-qemu disk), without a
   * separate blob file. Only positioned writes: several calls may fill different regions of
   * one file at once. Same HTTP path as downloadBlob (auth, redirects, timeouts, up to 5
   * retries of dropped connections, each resumed with Range from the bytes this call already
   * wrote, whose running hash is carried over).
   *
   * - `have`: bytes of this region an earlier call already wrote; they are re-hashed from the
   *   file and the download resumes after them. If the result does not verify (they were
   *   damaged), the blob is fetched once more from its start before reporting a mismatch.
   * - `sparse`: the region reads as zeros (a file just truncated to its size): all-zero 64 KiB
   *   pieces are not written, so they stay holes (not used together with `have`).
   *
   * Rejects with `digest-mismatch` (naming both digests) when the bytes do not hash to
   * `desc.digest`, `too-large`/`protocol` when the registry breaks the descriptor, `disk-full`
   * on ENOSPC. After a rejection the region's content is undefined: the caller discards the
   * file (or resumes). The file is not fsynced here: the caller syncs it once when complete.
   */
  async downloadBlobInto(
    repository: string,
    desc: Descriptor,
    fh: FileHandle,
    offset: number,
    opts: { signal?: AbortSignal; onProgress?: (bytesDone: number) => void; have?: number; sparse?: boolean } = {},
  ): Promise<void> {
    this.checkRepository(repository);
    this.checkDescriptor(desc);
    if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`downloadBlobInto: offset must be a non-negative integer, got ${offset}`);
    const have = opts.have ?? 0;
    if (!Number.isSafeInteger(have) || have < 0 || have > desc.size) throw new RangeError(`downloadBlobInto: have must be an integer from 0 to ${desc.size}, got ${have}`);
    const subject = `blob ${desc.digest} in ${repository}`;
    const progress = throttle(opts.onProgress);
    try {
      const state: DownloadState = { hash: createHash('sha256'), have: 0 };
      if (have > 0) state.have = await hashRegion(fh, offset, have, state.hash);
      // Bytes an earlier call wrote may be anywhere in the region: no zero skipping then.
      const out = new RegionWriter(fh, offset, opts.sparse === true && have === 0, have > 0 ? desc.size : 0);
      let resumedOldBytes = state.have > 0;
      progress(state.have);
      const restart = async (): Promise<void> => {
        // Nothing to truncate: the rewrite from byte 0 overwrites the region in place.
        state.hash = createHash('sha256');
        state.have = 0;
        progress(0, true);
      };
      for (;;) {
        const actual = await this.receiveBlob(repository, desc, subject, state, (chunk, at) => out.write(chunk, at), restart, progress, opts.signal);
        if (actual === desc.digest) break;
        if (resumedOldBytes) {
          resumedOldBytes = false;
          await restart();
          continue;
        }
        throw new OciError(
          'digest-mismatch',
          `${subject} from registry ${this.registry} hashes to ${actual}, expected ${desc.digest} (digest mismatch; the ${desc.size} bytes written at offset ${offset} are not used)`,
        );
      }
      progress(desc.size, true);
    } catch (err) {
      progress.cancel();
      throw this.localError(err, subject);
    }
  }

  /** HEAD /v2/<repo>/blobs/<digest>: true when the registry has the blob. */
  async blobExists(repository: string, digest: string): Promise<boolean> {
    this.checkRepository(repository);
    if (!isDigest(digest)) throw new OciError('bad-reference', `${JSON.stringify(digest)} is not a sha256 digest`);
    const op: Op = { method: 'HEAD', url: `/v2/${repository}/blobs/${digest}`, scope: `repository:${repository}:pull`, subject: `blob ${digest} in ${repository}` };
    const { res, url } = await this.call(op);
    if (res.statusCode === 200) {
      await drain(res);
      return true;
    }
    if (res.statusCode === 404) {
      await drain(res);
      return false;
    }
    throw await this.statusError(res, url, op);
  }

  /** Uploads a file as a blob (skipped when the registry already has it). */
  async uploadBlob(
    repository: string,
    file: string,
    desc: Descriptor,
    opts: { signal?: AbortSignal; onProgress?: (bytesDone: number) => void } = {},
  ): Promise<void> {
    this.checkRepository(repository);
    this.checkDescriptor(desc);
    const st = await fsp.stat(file);
    if (st.size !== desc.size) {
      throw new OciError('digest-mismatch', `cannot upload ${file} as ${desc.digest}: the file has ${st.size} bytes, the descriptor says ${desc.size}`);
    }
    const progress = throttle(opts.onProgress);
    try {
      await this.upload(repository, desc, () => ({ kind: 'file', path: file, size: desc.size, onSent: (n) => progress(n) }), opts.signal);
    } finally {
      progress.cancel();
    }
    progress(desc.size, true);
  }

  /** Uploads in-memory bytes (configs) as a blob (skipped when present). */
  async uploadBlobBytes(repository: string, bytes: Buffer, desc: Descriptor): Promise<void> {
    this.checkRepository(repository);
    this.checkDescriptor(desc);
    if (bytes.length !== desc.size || sha256(bytes) !== desc.digest) {
      throw new OciError('digest-mismatch', `cannot upload ${bytes.length} bytes hashing to ${sha256(bytes)} as ${desc.digest} (${desc.size} bytes)`);
    }
    await this.upload(repository, desc, () => ({ kind: 'buffer', data: bytes }), undefined);
  }

  /** PUTs a manifest under a tag (or its digest); returns its digest. */
  async putManifest(repository: string, tag: string, bytes: Buffer, mediaType: string): Promise<string> {
    this.checkRepository(repository);
    this.checkManifestReference(repository, tag);
    const digest = sha256(bytes);
    if (isDigest(tag) && tag !== digest) throw new OciError('digest-mismatch', `cannot store a manifest hashing to ${digest} under digest ${tag}`);
    const op: Op = {
      method: 'PUT',
      url: `/v2/${repository}/manifests/${tag}`,
      headers: { 'content-type': mediaType, 'content-length': String(bytes.length) },
      body: { kind: 'buffer', data: bytes },
      scope: `repository:${repository}:pull,push`,
      subject: this.manifestSubject(repository, tag),
    };
    const { res, url } = await this.call(op);
    if (res.statusCode !== 201 && res.statusCode !== 200) throw await this.statusError(res, url, op);
    await drain(res);
    const claimed = header(res, 'docker-content-digest');
    if (claimed !== undefined && claimed.startsWith('sha256:') && claimed !== digest) {
      throw new OciError('digest-mismatch', `registry ${this.registry} stored ${op.subject} as ${claimed}, but its bytes hash to ${digest}`);
    }
    return digest;
  }

  // ---------------------------------------------------------------- blobs

  /**
   * Fetches the blob from `state.have` to its end, retrying dropped connections, timeouts and
   * 5xx (up to DOWNLOAD_RETRIES times, each resumed with Range from where the bytes stopped).
   * Every byte goes to `sink` (at its position in the blob) and to `state.hash`. Returns the
   * sha256 of the whole blob; the caller compares it with the descriptor.
   */
  private async receiveBlob(
    repository: string,
    desc: Descriptor,
    subject: string,
    state: DownloadState,
    sink: BlobSink,
    restart: () => Promise<void>,
    progress: Throttled,
    signal: AbortSignal | undefined,
  ): Promise<string> {
    let failures = 0;
    while (state.have < desc.size) {
      if (signal?.aborted) throw abortedError(`download of ${subject}`, signal);
      try {
        await this.fetchBlobInto(repository, desc, subject, sink, state, restart, progress, signal);
      } catch (err) {
        if (err instanceof OciError && err.code === 'network' && failures < DOWNLOAD_RETRIES) {
          failures++;
          await sleep(200 * 2 ** (failures - 1), signal, `download of ${subject}`);
          continue;
        }
        throw err;
      }
    }
    return 'sha256:' + state.hash.digest('hex');
  }

  /**
   * One GET of the blob from offset `state.have`: hands the bytes to `sink`, updating `state`.
   */
  private async fetchBlobInto(
    repository: string,
    desc: Descriptor,
    subject: string,
    sink: BlobSink,
    state: DownloadState,
    restart: () => Promise<void>,
    progress: Throttled,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const have = state.have;
    const op: Op = {
      method: 'GET',
      url: `/v2/${repository}/blobs/${desc.digest}`,
      headers: have > 0 ? { range: `bytes=${have}-` } : {},
      scope: `repository:${repository}:pull`,
      subject,
      signal,
    };
    const { res, url } = await this.call(op);
    const status = res.statusCode ?? 0;
    if (status === 416) {
      // Our offset is not acceptable to the server: start from scratch.
      await drain(res);
      await restart();
      throw new OciError('network', `registry ${this.registry} refused to resume ${subject} (416); restarting from byte 0`, { status });
    }
    if (status === 206) {
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header(res, 'content-range') ?? '');
      if (!m || Number(m[1]) !== have) {
        await drain(res);
        await restart();
        throw new OciError('network', `registry ${this.registry} answered the resume of ${subject} at byte ${have} with range ${JSON.stringify(header(res, 'content-range'))}; restarting from byte 0`, { status });
      }
      if (m[3] !== '*' && Number(m[3]) !== desc.size) {
        res.destroy();
        throw new OciError('protocol', `registry ${this.registry} says ${subject} has ${m[3]} bytes; the descriptor says ${desc.size}`, { status });
      }
    } else if (status === 200) {
      // The server ignored our Range (or we asked for none): the body starts at 0.
      if (state.have > 0) await restart();
    } else {
      throw await this.statusError(res, url, op);
    }
    const declared = contentLength(res);
    if (declared !== undefined && state.have + declared > desc.size) {
      res.destroy();
      throw new OciError('too-large', `registry ${this.registry} is sending ${state.have + declared} bytes for ${subject}; the descriptor says ${desc.size}`, { status });
    }
    let writing = false;
    try {
      for await (const chunk of res as AsyncIterable<Buffer>) {
        if (state.have + chunk.length > desc.size) {
          res.destroy();
          throw new OciError('too-large', `registry ${this.registry} sent more than the ${desc.size} bytes the descriptor of ${subject} declares`, { status });
        }
        writing = true;
        await sink(chunk, state.have);
        writing = false;
        state.hash.update(chunk);
        state.have += chunk.length;
        progress(state.have);
      }
    } catch (err) {
      if (err instanceof OciError) throw err;
      // Local write failures (a full disk, EIO) are not network errors: downloadBlob(Into)
      // maps them and names the blob.
      if (writing) {
        res.destroy();
        throw err;
      }
      throw transportError(err, this.where(url), this.registry);
    }
    if (state.have < desc.size) {
      throw new OciError('network', `connection to ${this.where(url)} ended after ${state.have} of ${desc.size} bytes of ${subject}`);
    }
  }

  private async upload(repository: string, desc: Descriptor, body: () => Body, signal: AbortSignal | undefined): Promise<void> {
    const subject = `blob ${desc.digest} in ${repository}`;
    if (await this.blobExists(repository, desc.digest)) return;
    for (let attempt = 1; ; attempt++) {
      try {
        await this.uploadOnce(repository, desc, subject, body(), signal);
        return;
      } catch (err) {
        // A monolithic upload cannot resume: start a new upload session.
        if (err instanceof OciError && err.code === 'network' && attempt < UPLOAD_ATTEMPTS && !signal?.aborted) {
          await sleep(500 * attempt, signal, `upload of ${subject}`);
          continue;
        }
        throw err;
      }
    }
  }

  private async uploadOnce(repository: string, desc: Descriptor, subject: string, body: Body, signal: AbortSignal | undefined): Promise<void> {
    const scope = `repository:${repository}:pull,push`;
    const start: Op = {
      method: 'POST',
      url: `/v2/${repository}/blobs/uploads/`,
      headers: { 'content-length': '0' },
      scope,
      subject: `upload of ${subject}`,
      signal,
    };
    const started = await this.call(start);
    if (started.res.statusCode !== 202) throw await this.statusError(started.res, started.url, start);
    await drain(started.res);
    const location = header(started.res, 'location');
    if (!location) throw new OciError('protocol', `registry ${this.registry} started an upload to ${repository} without a Location header`);
    let target: URL;
    try {
      target = new URL(location, started.url);
    } catch (err) {
      throw new OciError('protocol', `registry ${this.registry} gave an unusable upload Location ${JSON.stringify(location)}`, { cause: err });
    }
    // Append to the string, not via searchParams: re-serialising would re-encode the
    // registry's opaque state parameters.
    const put = new URL(`${target.href}${target.search ? '&' : '?'}digest=${encodeURIComponent(desc.digest)}`);
    const op: Op = {
      method: 'PUT',
      url: put,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(desc.size) },
      body,
      scope,
      subject: `upload of ${subject}`,
      signal,
    };
    const { res, url } = await this.call(op);
    if (res.statusCode !== 201 && res.statusCode !== 204 && res.statusCode !== 200) throw await this.statusError(res, url, op);
    await drain(res);
    const claimed = header(res, 'docker-content-digest');
    if (claimed !== undefined && claimed.startsWith('sha256:') && claimed !== desc.digest) {
      throw new OciError('digest-mismatch', `registry ${this.registry} stored the upload of ${subject} as ${claimed}`);
    }
  }

  // ---------------------------------------------------------------- HTTP + auth

  /**
   * Sends `op` to the registry, handling auth challenges (one retry) and redirects.
   * The caller owns the returned response body.
   */
  private async call(op: Op): Promise<Answer> {
    let challenged = false;
    for (;;) {
      const auth = await this.authorization(op);
      const answer = await this.sendFollowing(op, auth);
      const { res, url } = answer;
      if (res.statusCode !== 401 || !this.isRegistryUrl(url)) return answer;
      const challenges = parseChallenges(res.headersDistinct['www-authenticate'] ?? []);
      await drain(res);
      if (challenged) throw this.unauthorized(op, auth !== undefined);
      challenged = true;
      await this.acceptChallenge(challenges, op, auth !== undefined);
    }
  }

  /** The Authorization header to send for `op` given what we learned so far. */
  private async authorization(op: Op): Promise<string | undefined> {
    if (this.authMode === 'basic') return this.basicHeader();
    if (this.authMode === 'bearer' && this.bearer) {
      const key = op.scope ?? '';
      const cached = this.tokens.get(key);
      if (cached && cached.expiresAt > Date.now()) return `Bearer ${cached.value}`;
      // Ask for the token up front: saves a round trip and re-sending upload bodies.
      return `Bearer ${await this.token(key, op.scope ?? '', op)}`;
    }
    return undefined;
  }

  private basicHeader(): string | undefined {
    if (this.username === undefined || this.password === undefined) return undefined;
    return 'Basic ' + Buffer.from(`${this.username}:${this.password}`, 'utf8').toString('base64');
  }

  private async acceptChallenge(challenges: AuthChallenge[], op: Op, sentAuth: boolean): Promise<void> {
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm);
    const basic = challenges.find((c) => c.scheme === 'basic');
    if (bearer) {
      this.authMode = 'bearer';
      this.bearer = { realm: bearer.params.realm!, ...(bearer.params.service ? { service: bearer.params.service } : {}) };
      const key = op.scope ?? '';
      this.tokens.delete(key);
      // For pushes our scope (pull,push) wins over whatever the challenge asks for.
      const scope = op.scope ?? bearer.params.scope ?? '';
      await this.token(key, scope, op);
      return;
    }
    if (basic) {
      if (this.username === undefined) throw this.unauthorized(op, false);
      if (this.authMode === 'basic' && sentAuth) throw this.unauthorized(op, true);
      this.authMode = 'basic';
      return;
    }
    const offered = challenges.map((c) => c.scheme).join(', ') || 'none';
    throw new OciError('unauthorized', `registry ${this.registry} answered 401 for ${op.subject} with unsupported authentication (${offered}); only Basic and Bearer are supported`, { status: 401 });
  }

  /** A bearer token for `scope`, cached until it expires; concurrent callers share one fetch. */
  private token(key: string, scope: string, op: Op): Promise<string> {
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > Date.now()) return Promise.resolve(cached.value);
    const running = this.tokenFetches.get(key);
    if (running) return running;
    const p = this.fetchToken(key, scope, op).finally(() => this.tokenFetches.delete(key));
    this.tokenFetches.set(key, p);
    return p;
  }

  private async fetchToken(key: string, scope: string, op: Op): Promise<string> {
    const bearer = this.bearer!;
    let url: URL;
    try {
      url = new URL(bearer.realm);
    } catch (err) {
      throw new OciError('protocol', `registry ${this.registry} named an unusable token realm ${JSON.stringify(bearer.realm)}`, { cause: err });
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new OciError('protocol', `registry ${this.registry} named a token realm with scheme ${url.protocol}`);
    const basic = this.basicHeader();
    if (url.protocol === 'http:' && !this.insecure && basic) {
      throw new OciError('insecure-refused', `registry ${this.registry} wants credentials sent to ${url.host} over plain HTTP; refusing (mark the registry insecure if that is intended: fleet registry login ${this.registry} --insecure)`);
    }
    if (bearer.service) url.searchParams.set('service', bearer.service);
    for (const s of scope.split(' ')) if (s) url.searchParams.append('scope', s);
    const tokenOp: Op = { method: 'GET', url, headers: { accept: 'application/json' }, subject: `a token for ${op.subject}`, ...(op.signal ? { signal: op.signal } : {}) };
    const where = `token service ${url.host} of registry ${this.registry}`;
    const { res } = await this.sendFollowing(tokenOp, basic, url);
    const status = res.statusCode ?? 0;
    if (status === 401) {
      await drain(res);
      throw new OciError(
        'unauthorized',
        basic
          ? `${where} rejected the credentials for ${op.subject}: wrong or missing credentials (fleet registry login ${this.registry})`
          : `${where} requires credentials for ${op.subject} (fleet registry login ${this.registry})`,
        { status },
      );
    }
    if (status === 403) {
      await drain(res);
      throw new OciError('denied', `${where} denied a token for ${op.subject} (403): the account may not access it`, { status });
    }
    if (status !== 200) {
      const body = await readCapped(res, MAX_ERROR_BODY, () => new OciError('protocol', `${where} answered ${status}`, { status })).catch(() => Buffer.alloc(0));
      throw new OciError(status >= 500 ? 'network' : 'protocol', `${where} answered ${status} when asked for a token for ${op.subject}: ${registryErrors(body).text}`, { status });
    }
    const body = await readCapped(res, MAX_TOKEN_BODY, () => new OciError('protocol', `${where} sent a token response larger than ${MAX_TOKEN_BODY} bytes`));
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString('utf8'));
    } catch (err) {
      throw new OciError('protocol', `${where} sent a token response that is not JSON`, { cause: err });
    }
    const value = isRecord(parsed) ? (typeof parsed.token === 'string' && parsed.token ? parsed.token : parsed.access_token) : undefined;
    if (typeof value !== 'string' || value === '') throw new OciError('protocol', `${where} sent a token response without "token" or "access_token"`);
    const expiresIn = isRecord(parsed) && typeof parsed.expires_in === 'number' && parsed.expires_in > 0 ? parsed.expires_in : 60;
    // Renew a little early so a token does not expire in flight.
    const lifetimeMs = expiresIn > 20 ? (expiresIn - 10) * 1000 : expiresIn * 500;
    this.tokens.set(key, { value, expiresAt: Date.now() + lifetimeMs });
    return value;
  }

  private unauthorized(op: Op, sentCredentials: boolean): OciError {
    const why = sentCredentials || this.username !== undefined ? 'wrong or missing credentials' : 'credentials are required';
    return new OciError('unauthorized', `registry ${this.registry} answered 401 for ${op.subject}: ${why} (fleet registry login ${this.registry})`, { status: 401 });
  }

  private isRegistryUrl(url: URL): boolean {
    return url.protocol === this.base.protocol && url.host === this.base.host;
  }

  private where(url: URL): string {
    return this.isRegistryUrl(url) ? `registry ${this.registry}` : `${url.host} (reached via registry ${this.registry})`;
  }

  /**
   * Sends `op` and follows redirects. Authorization goes only to `authHost` (the
   * registry by default): never to storage hosts a blob redirect points at.
   */
  private async sendFollowing(op: Op, auth: string | undefined, authHost?: URL): Promise<Answer> {
    let url = typeof op.url === 'string' ? new URL(op.url, this.base) : op.url;
    let method = op.method;
    let body = op.body;
    const allowed = authHost ?? this.base;
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { 'user-agent': this.userAgent, ...op.headers };
      if (auth !== undefined && url.protocol === allowed.protocol && url.host === allowed.host) headers.authorization = auth;
      if (body !== op.body) {
        // A 303 turned the request into a body-less GET.
        delete headers['content-length'];
        delete headers['content-type'];
      }
      const res = await this.send(url, method, headers, body, op.signal);
      const location = header(res, 'location');
      if (!REDIRECT_STATUSES.has(res.statusCode ?? 0) || !location) return { res, url };
      await drain(res);
      if (hop >= MAX_REDIRECTS) throw new OciError('protocol', `registry ${this.registry} redirected ${op.subject} more than ${MAX_REDIRECTS} times`);
      let next: URL;
      try {
        next = new URL(location, url);
      } catch (err) {
        throw new OciError('protocol', `registry ${this.registry} redirected ${op.subject} to an unusable location ${JSON.stringify(location)}`, { cause: err });
      }
      if (next.protocol !== 'https:' && next.protocol !== 'http:') throw new OciError('protocol', `registry ${this.registry} redirected ${op.subject} to ${next.protocol} URL`);
      if (next.protocol === 'http:' && !this.insecure) {
        throw new OciError('insecure-refused', `registry ${this.registry} redirected ${op.subject} to plain-HTTP ${next.host}; refusing (mark the registry insecure if that is intended: fleet registry login ${this.registry} --insecure)`);
      }
      if (res.statusCode === 303 && method !== 'HEAD') {
        method = 'GET';
        body = undefined;
      }
      url = next;
    }
  }

  /** One HTTP exchange. Resolves with the response head; the body streams. */
  private async send(url: URL, method: string, headers: Record<string, string>, body: Body | undefined, signal: AbortSignal | undefined): Promise<http.IncomingMessage> {
    try {
      return await this.sendOnce(url, method, headers, body, signal, true);
    } catch (err) {
      // The server closed an idle keep-alive socket just as we reused it: the request
      // never reached it, so an idempotent request is safe to send again on a new one.
      if (err instanceof StaleSocket) return this.sendOnce(url, method, headers, body, signal, false);
      throw err;
    }
  }

  private sendOnce(
    url: URL,
    method: string,
    headers: Record<string, string>,
    body: Body | undefined,
    signal: AbortSignal | undefined,
    mayRetry: boolean,
  ): Promise<http.IncomingMessage> {
    const where = this.where(url);
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(abortedError(`${method} ${url.pathname} on ${where}`, signal));
      const secure = url.protocol === 'https:';
      let res: http.IncomingMessage | undefined;
      let settled = false;
      const req = (secure ? https : http).request(url, { method, headers, agent: secure ? this.httpsAgent : this.httpAgent });
      const fail = (err: unknown): void => {
        const code = errnoCode(err);
        if (!settled && mayRetry && req.reusedSocket && (code === 'ECONNRESET' || code === 'EPIPE') && IDEMPOTENT.has(method)) {
          settled = true;
          return reject(new StaleSocket());
        }
        const e = transportError(err, where, this.registry);
        if (!settled) {
          settled = true;
          reject(e);
        } else if (res && !res.destroyed) {
          res.destroy(e);
        }
      };
      const onAbort = (): void => {
        const e = abortedError(`${method} ${url.pathname} on ${where}`, signal);
        req.destroy(e);
        res?.destroy(e);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      req.on('close', () => signal?.removeEventListener('abort', onAbort));
      req.setTimeout(this.timeoutMs, () => {
        const e = new OciError('network', `${where} sent nothing for ${Math.round(this.timeoutMs / 1000)} s (${method} ${url.pathname}); timed out`);
        req.destroy(e);
        res?.destroy(e);
      });
      req.on('error', fail);
      req.on('response', (r) => {
        res = r;
        settled = true;
        resolve(r);
      });
      if (!body) {
        req.end();
      } else if (body.kind === 'buffer') {
        req.end(body.data);
      } else if (body.size === 0) {
        req.end();
      } else {
        const stream = createReadStream(body.path, { start: 0, end: body.size - 1 });
        stream.on('error', (err) => req.destroy(err));
        req.on('close', () => stream.destroy());
        if (body.onSent) {
          const onSent = body.onSent;
          let sent = 0;
          stream.on('data', (chunk) => onSent((sent += chunk.length)));
        }
        stream.pipe(req);
      }
    });
  }

  /** Maps errors raised while reading a response body. */
  private async guard<T>(url: URL, p: Promise<T>): Promise<T> {
    try {
      return await p;
    } catch (err) {
      throw transportError(err, this.where(url), this.registry);
    }
  }

  /** Local file errors: a full disk is an OciError; others (EACCES, …) stay Node errors. */
  private localError(err: unknown, subject: string, kept?: string): unknown {
    if (err instanceof OciError) return err;
    const code = errnoCode(err);
    if (code === 'ENOSPC' || code === 'EDQUOT') {
      return new OciError('disk-full', `no space left on the device while storing ${subject}: free some space and retry${kept ? ` (${kept})` : ''}`, { cause: err });
    }
    return err;
  }

  /** Turns a non-success answer into an OciError (reads at most 64 KiB of its body). */
  private async statusError(res: http.IncomingMessage, url: URL, op: Op): Promise<OciError> {
    const status = res.statusCode ?? 0;
    let body: Buffer = Buffer.alloc(0);
    if (op.method !== 'HEAD') {
      body = await readCapped(res, MAX_ERROR_BODY, () => new OciError('protocol', 'error body too large')).catch(() => Buffer.alloc(0));
    } else {
      await drain(res);
    }
    const { codes, text } = registryErrors(body);
    const detail = text ? `: ${text}` : '';
    const where = this.where(url);
    const opts = { status };
    // Go's TLS server answers plain HTTP with a bare HTTP/1.0 400 ("Client sent an HTTP
    // request to an HTTPS server"); for HEAD there is no body to read, so go by the shape.
    const tlsOnly = /HTTPS server/i.test(body.toString('utf8')) || (op.method === 'HEAD' && res.httpVersion === '1.0' && header(res, 'docker-distribution-api-version') === undefined);
    if (status === 400 && url.protocol === 'http:' && tlsOnly) {
      return new OciError('tls', `registry ${this.registry} requires HTTPS but was marked insecure (plain HTTP); log in again without --insecure (fleet registry login ${this.registry})`, opts);
    }
    switch (status) {
      case 401:
        return this.unauthorized(op, true);
      case 403:
        return new OciError('denied', `${where} denied ${op.method} of ${op.subject} (403): the credentials are valid but lack permission${detail}`, opts);
      case 404:
        if (codes.includes('NAME_UNKNOWN')) return new OciError('not-found', `repository ${repositoryOf(op)} not found on registry ${this.registry}`, opts);
        return new OciError('not-found', `${op.subject} not found on ${where}${detail}`, opts);
      case 413:
        return new OciError('too-large', `${where} refused ${op.subject} as too large (413)${detail}`, opts);
      case 415:
        return new OciError('unsupported-media-type', `${where} refused the media type of ${op.subject} (415)${detail}`, opts);
      case 429:
        return new OciError('network', `${where} is rate-limiting requests (429) for ${op.subject}; retry later`, opts);
    }
    if (codes.includes('DIGEST_INVALID')) return new OciError('digest-mismatch', `${where} rejected ${op.subject}: the data does not match its digest${detail}`, opts);
    if (codes.includes('MANIFEST_BLOB_UNKNOWN')) return new OciError('protocol', `${where} rejected ${op.subject}: it refers to blobs the repository does not have; upload them first${detail}`, opts);
    if (codes.includes('NAME_INVALID') || codes.includes('TAG_INVALID')) return new OciError('bad-reference', `${where} rejected the name of ${op.subject}${detail}`, opts);
    if (codes.includes('UNSUPPORTED') && status === 405) return new OciError('protocol', `${where} does not support ${op.method} for ${op.subject} (405)${detail}`, opts);
    if (status >= 500) return new OciError('network', `${where} failed with ${status} for ${op.subject}${detail}`, opts);
    return new OciError('protocol', `${where} answered ${status} for ${op.method} of ${op.subject}${detail}`, opts);
  }

  // ---------------------------------------------------------------- validation

  private manifestSubject(repository: string, reference: string): string {
    return isDigest(reference) ? `${repository}@${reference}` : `${repository}:${reference}`;
  }

  private checkRepository(repository: string): void {
    const why = repositoryProblem(repository);
    if (why) throw new OciError('bad-reference', `invalid repository for registry ${this.registry}: ${why}`);
  }

  private checkManifestReference(repository: string, reference: string): void {
    if (isDigest(reference) || isTag(reference)) return;
    throw new OciError('bad-reference', `${JSON.stringify(reference)} is neither a tag nor a sha256 digest (for ${repository} on registry ${this.registry})`);
  }

  private checkDescriptor(desc: Descriptor): void {
    if (!isDigest(desc.digest)) throw new OciError('bad-reference', `descriptor digest ${JSON.stringify(desc.digest)} is not sha256:<64 hex>; only sha256 is supported`);
    if (!Number.isSafeInteger(desc.size) || desc.size < 0) throw new OciError('protocol', `descriptor ${desc.digest} has an invalid size ${String(desc.size)}`);
  }
}

function repositoryOf(op: Op): string {
  const m = /^\/v2\/(.+?)\/(?:manifests|blobs|tags)\//.exec(typeof op.url === 'string' ? op.url : op.url.pathname);
  return m ? m[1]! : op.subject;
}

function isImageManifestType(mt: string): boolean {
  return mt === MANIFEST_MEDIA_TYPES.ociManifest || mt === MANIFEST_MEDIA_TYPES.dockerManifest;
}

function isManifestType(mt: string): boolean {
  return (Object.values(MANIFEST_MEDIA_TYPES) as string[]).includes(mt);
}

/**
 * Picks the index entry for `want`: os and architecture must match; when a variant is
 * asked for it must match too, otherwise an entry without variant is preferred.
 */
export function selectPlatform(entries: Descriptor[], want: Platform): Descriptor | undefined {
  const candidates = entries.filter(
    (e) =>
      e.platform !== undefined &&
      e.platform.os === want.os &&
      e.platform.architecture === want.architecture &&
      e.mediaType !== MANIFEST_MEDIA_TYPES.ociIndex &&
      e.mediaType !== MANIFEST_MEDIA_TYPES.dockerList,
  );
  if (want.variant !== undefined) return candidates.find((e) => e.platform!.variant === want.variant);
  return candidates.find((e) => e.platform!.variant === undefined) ?? candidates[0];
}

async function fileExists(p: string): Promise<boolean> {
  try {
    await fsp.access(p);
    return true;
  } catch {
    return false;
  }
}

/** Where the bytes of a blob download go: `at` is the chunk's position in the blob. */
type BlobSink = (chunk: Buffer, at: number) => Promise<void>;

/** Hashes what an earlier attempt left in the partial file (if it is not too long). */
interface DownloadState {
  hash: Hash;
  /** Bytes in the partial file, all fed to `hash`. */
  have: number;
}

async function hashExisting(partial: string, size: number, limit: number): Promise<DownloadState> {
  const hash = createHash('sha256');
  if (size === 0 || size > limit) return { hash, have: 0 };
  let have = 0;
  for await (const chunk of createReadStream(partial, { end: size - 1 }) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    have += chunk.length;
  }
  return { hash, have };
}

/** fsync a directory so a rename into it survives a crash (best effort: not all systems allow it). */
async function syncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await fsp.open(dir, 'r');
    await fh.sync();
  } catch {
    // Not supported here; the rename itself is still atomic.
  } finally {
    await fh?.close().catch(() => {});
  }
}
