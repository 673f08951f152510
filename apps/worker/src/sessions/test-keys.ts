// ed25519 key pairs for the session tests' in-process SSH servers and clients.
//
// Why not ssh2's utils.generateKeyPairSync('ed25519') alone: about one pair in 256 has a public
// key that starts with a zero byte, which ssh2 strips, and ssh2 itself then refuses the pair
// ("Malformed OpenSSH private key"; mscdex/ssh2 issues 1390 and 1513). A suite that made such a
// key at load failed as a whole (CI, 2026-12-07). Generated again until ssh2 reads both halves.
import ssh2 from 'ssh2';

export function testKeyPair(): { private: string; public: string } {
  for (let i = 0; i < 64; i++) {
    const pair = ssh2.utils.generateKeyPairSync('ed25519');
    if (!(ssh2.utils.parseKey(pair.private) instanceof Error) && !(ssh2.utils.parseKey(pair.public) instanceof Error)) return pair;
  }
  throw new Error('ssh2 made no readable ed25519 key pair in 64 tries');
}
