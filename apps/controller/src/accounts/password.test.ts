import { describe, expect, it } from 'vitest';
import { hashPassword, verifyPassword } from './password.ts';

describe('account passwords (scrypt)', () => {
  it('verifies the right password and refuses a wrong one', async () => {
    const stored = await hashPassword('correct horse');
    expect(stored).toMatch(/^scrypt\$16384\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    expect(await verifyPassword('correct horse', stored)).toBe(true);
    expect(await verifyPassword('correct horsE', stored)).toBe(false);
    expect(await verifyPassword('', stored)).toBe(false);
  });

  it('salts every hash: the same password stores differently', async () => {
    expect(await hashPassword('same')).not.toBe(await hashPassword('same'));
  });

  it('treats unreadable or hostile stored hashes as a failed login, not a crash', async () => {
    for (const bad of ['', 'plain', 'scrypt$x$8$1$AA$AA', 'bcrypt$16384$8$1$AA$AA', 'scrypt$16384$8$1$AA$', 'scrypt$99999999$8$1$AA$AA', 'scrypt$3$8$1$AA$AA']) {
      expect(await verifyPassword('pw', bad)).toBe(false);
    }
  });
});
