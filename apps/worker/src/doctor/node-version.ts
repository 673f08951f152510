// Node.js version: the worker needs >= 20.19 (require(esm) and the node:crypto/tls APIs it uses).
import { fail, ok, type Finding } from './check.ts';

export const MIN_NODE = { major: 20, minor: 19 } as const;

export function checkNodeVersion(version: string = process.versions.node): Finding {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(version);
  if (!m) return fail(`cannot read the Node.js version ${JSON.stringify(version)}`, `install Node.js ${MIN_NODE.major}.${MIN_NODE.minor} or newer`);
  const major = Number(m[1]);
  const minor = Number(m[2]);
  const good = major > MIN_NODE.major || (major === MIN_NODE.major && minor >= MIN_NODE.minor);
  return good
    ? ok(`Node.js ${version.replace(/^v/, '')}`)
    : fail(`Node.js ${version.replace(/^v/, '')} is too old (need >= ${MIN_NODE.major}.${MIN_NODE.minor})`, `install Node.js ${MIN_NODE.major}.${MIN_NODE.minor} or newer (e.g. the current LTS)`);
}
