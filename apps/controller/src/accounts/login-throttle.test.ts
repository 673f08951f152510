import { describe, expect, it } from 'vitest';
import { LoginThrottle } from './login-throttle.ts';

describe('LoginThrottle', () => {
  it('refuses a username after too many failures within the window, and lets it try again after', () => {
    let now = 0;
    const t = new LoginThrottle(3, 60_000, () => now);
    for (let i = 0; i < 3; i++) {
      expect(t.retryAfter('alice')).toBe(0);
      t.failed('alice');
      now += 1000;
    }
    expect(t.retryAfter('alice')).toBe(57); // the first failure leaves the window at 60 s
    expect(t.retryAfter('bob')).toBe(0); // other users are unaffected
    now = 60_001;
    expect(t.retryAfter('alice')).toBe(0);
  });
  it('forgets failures after a successful login', () => {
    const t = new LoginThrottle(2, 60_000, () => 0);
    t.failed('alice');
    t.succeeded('alice');
    t.failed('alice');
    expect(t.retryAfter('alice')).toBe(0);
  });
});
