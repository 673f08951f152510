import { isIPv6 } from 'node:net';
import { OciError } from './errors.ts';

/** A parsed `registry[:port]/repository[:tag][@sha256:…]`. */
export interface ImageReference {
  /** host, host:port, IPv4[:port] or [IPv6][:port], as written. */
  registry: string;
  /** Path inside the registry, e.g. "fleet/guest". Always lowercase. */
  repository: string;
  /** Set when the reference names a tag; "latest" when neither tag nor digest was given. */
  tag?: string;
  /** sha256:<64 hex> when the reference is pinned. */
  digest?: string;
}

// Grammar from the OCI distribution spec / Docker reference rules.
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const DOMAIN_COMPONENT = /^(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const ANY_DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
/** Limit on registry + "/" + repository, as in the Docker reference implementation. */
const NAME_MAX = 255;

export function isDigest(s: string): boolean {
  return DIGEST.test(s);
}

/**
 * True when `input` starts with a registry host (a first component containing '.' or
 * ':' or equal to "localhost") followed by a '/'. Local image names such as
 * "fleet-guest" or "ubuntu-base:24.04" are not registry references.
 */
export function isRegistryReference(input: string): boolean {
  const slash = input.indexOf('/');
  if (slash <= 0) return false;
  const first = input.slice(0, slash);
  return first.includes('.') || first.includes(':') || first === 'localhost';
}

function bad(input: string, why: string): OciError {
  return new OciError('bad-reference', `invalid image reference ${JSON.stringify(input)}: ${why}`);
}

/** Validates host[:port] (host = DNS name, IPv4 or [IPv6]); returns why not, or undefined. */
export function registryProblem(registry: string): string | undefined {
  let host = registry;
  let port: string | undefined;
  if (registry.startsWith('[')) {
    const close = registry.indexOf(']');
    if (close < 0) return `registry ${registry} has an unclosed '[' (IPv6 addresses are written [addr]:port)`;
    const addr = registry.slice(1, close);
    if (!isIPv6(addr)) return `registry ${registry}: ${addr} is not an IPv6 address`;
    const rest = registry.slice(close + 1);
    if (rest !== '') {
      if (!rest.startsWith(':')) return `registry ${registry}: unexpected ${JSON.stringify(rest)} after the IPv6 address`;
      port = rest.slice(1);
    }
    host = '';
  } else {
    const colon = registry.indexOf(':');
    if (colon >= 0) {
      host = registry.slice(0, colon);
      port = registry.slice(colon + 1);
    }
    if (host === '') return `registry ${registry} has an empty host name`;
    for (const part of host.split('.')) {
      if (!DOMAIN_COMPONENT.test(part)) {
        return part === ''
          ? `registry host ${host} has an empty label`
          : `registry host ${host}: label ${JSON.stringify(part)} may only hold letters, digits and inner '-'`;
      }
    }
  }
  if (port !== undefined) {
    if (!/^[0-9]{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) return `registry ${registry}: port ${JSON.stringify(port)} must be a number from 1 to 65535`;
  }
  return undefined;
}

/** Validates a repository path ("fleet/guest"); returns why not, or undefined. */
export function repositoryProblem(path: string): string | undefined {
  if (path === '') return 'the repository path is empty';
  if (path.length > NAME_MAX) return `the repository path is ${path.length} characters long; at most ${NAME_MAX} are allowed`;
  for (const component of path.split('/')) {
    if (component === '') return `repository ${JSON.stringify(path)} has an empty path component`;
    if (!PATH_COMPONENT.test(component)) {
      if (component.toLowerCase() !== component && PATH_COMPONENT.test(component.toLowerCase())) {
        return `repository names must be lowercase (${JSON.stringify(component)})`;
      }
      return `repository component ${JSON.stringify(component)} may only hold a-z, 0-9 and single '.', '_' or '__' or runs of '-' between them`;
    }
  }
  return undefined;
}

/** True for a valid tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}. */
export function isTag(s: string): boolean {
  return TAG.test(s);
}

/**
 * Parses `registry[:port]/path/components[:tag][@sha256:<hex>]`. The registry is
 * required (Fleet never guesses a default registry). Without tag and digest the tag is
 * "latest". Throws OciError('bad-reference') saying what is wrong.
 */
export function parseImageReference(input: string): ImageReference {
  if (typeof input !== 'string' || input.length === 0) throw bad(String(input), 'it is empty');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(input)) throw bad(input, 'it contains control characters');
  if (/\s/.test(input)) throw bad(input, 'it contains whitespace');
  if (input.length > 4096) throw bad(input.slice(0, 64) + '…', `it is ${input.length} characters long`);

  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (digest.includes('@')) throw bad(input, "it contains more than one '@'");
    if (!isDigest(digest)) {
      if (ANY_DIGEST.test(digest) && !digest.startsWith('sha256:')) {
        throw bad(input, `digest algorithm ${digest.slice(0, digest.indexOf(':'))} is not supported; only sha256 digests are`);
      }
      throw bad(input, `digest ${JSON.stringify(digest)} is not sha256: followed by 64 lowercase hex digits`);
    }
  }

  const slash = rest.indexOf('/');
  if (slash < 0 || !isRegistryReference(rest)) {
    throw bad(input, 'it does not start with a registry host; write it as HOST[:PORT]/REPOSITORY[:TAG], e.g. 127.0.0.1:5000/fleet/guest:1.0');
  }
  const registry = rest.slice(0, slash);
  let path = rest.slice(slash + 1);

  let tag: string | undefined;
  const colon = path.lastIndexOf(':');
  if (colon >= 0) {
    tag = path.slice(colon + 1);
    path = path.slice(0, colon);
    if (!TAG.test(tag)) {
      throw bad(input, tag === '' ? 'the tag after ":" is empty' : `tag ${JSON.stringify(tag)} must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`);
    }
  }

  const registryWhy = registryProblem(registry);
  if (registryWhy) throw bad(input, registryWhy);

  const pathWhy = repositoryProblem(path);
  if (pathWhy) throw bad(input, pathWhy);
  const nameLength = registry.length + 1 + path.length;
  if (nameLength > NAME_MAX) throw bad(input, `the name (registry/repository) is ${nameLength} characters long; at most ${NAME_MAX} are allowed`);

  const ref: ImageReference = { registry, repository: path };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  if (tag === undefined && digest === undefined) ref.tag = 'latest';
  return ref;
}

/** registry/repo[:tag][@digest] */
export function formatImageReference(ref: ImageReference): string {
  let s = `${ref.registry}/${ref.repository}`;
  if (ref.tag !== undefined) s += `:${ref.tag}`;
  if (ref.digest !== undefined) s += `@${ref.digest}`;
  return s;
}

/** registry/repo@digest: what gets recorded once a tag has been resolved. */
export function pinnedReference(ref: ImageReference, digest: string): string {
  if (!isDigest(digest)) throw new OciError('bad-reference', `cannot pin ${ref.registry}/${ref.repository} to ${JSON.stringify(digest)}: not a sha256 digest`);
  return `${ref.registry}/${ref.repository}@${digest}`;
}
