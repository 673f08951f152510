// Fleet-wide settings kept in the database (one JSON value per key).
import type { FleetDb } from '@fleet/db';
import type { SchedulerProfile } from './scheduler/placement.ts';

/** Several controllers share the settings: a cached value is re-read after this long. */
const CACHE_MS = 1_000;

export class SettingsService {
  private profileCache: { value: SchedulerProfile; at: number } | undefined;

  constructor(
    private readonly db: FleetDb,
    private readonly defaultProfile: SchedulerProfile,
  ) {}

  async schedulerProfile(): Promise<SchedulerProfile> {
    if (this.profileCache && Date.now() - this.profileCache.at < CACHE_MS) return this.profileCache.value;
    const row = await this.db.setting.findUnique({ where: { key: 'scheduler.profile' } });
    const value = row ? (JSON.parse(row.value) as unknown) : undefined;
    const profile = value === 'spread' || value === 'pack' ? value : this.defaultProfile;
    this.profileCache = { value: profile, at: Date.now() };
    return profile;
  }

  async setSchedulerProfile(profile: SchedulerProfile): Promise<void> {
    const value = JSON.stringify(profile);
    await this.db.setting.upsert({ where: { key: 'scheduler.profile' }, create: { key: 'scheduler.profile', value }, update: { value } });
    this.profileCache = { value: profile, at: Date.now() };
  }

  /**
   * All controllers of a fleet must use the same failure timings: a worker fenced after one
   * controller's fenceAfter must be declared lost only after it, by whichever controller leads.
   * The running controllers' timings are recorded; one started with others refuses while any of
   * them runs (stop them all to change the timings).
   */
  async checkFleetTimings(t: { heartbeatIntervalMs: number; fenceAfterMs: number; lostAfterMs: number }, othersRunning: boolean): Promise<void> {
    const key = 'fleet.failureTimings';
    const mine = { heartbeatIntervalMs: t.heartbeatIntervalMs, fenceAfterMs: t.fenceAfterMs, lostAfterMs: t.lostAfterMs };
    const row = await this.db.setting.findUnique({ where: { key } });
    if (row && othersRunning) {
      const recorded = JSON.parse(row.value) as typeof mine;
      if (recorded.heartbeatIntervalMs !== mine.heartbeatIntervalMs || recorded.fenceAfterMs !== mine.fenceAfterMs || recorded.lostAfterMs !== mine.lostAfterMs) {
        const show = (x: typeof mine) => `--heartbeat-interval ${x.heartbeatIntervalMs}ms --worker-offline-timeout ${x.lostAfterMs}ms --worker-fence-after ${x.fenceAfterMs}ms`;
        throw new Error(
          `the controllers running on this database use ${show(recorded)}; this one was started with ${show(mine)}. ` +
            'Every controller of a fleet must use the same timings (a worker could otherwise be re-placed before it stopped its VMs): ' +
            'start this one with the same values, or stop every controller to change them.',
        );
      }
      return;
    }
    const value = JSON.stringify(mine);
    await this.db.setting.upsert({ where: { key }, create: { key, value }, update: { value } });
  }

  /**
   * All controllers of a fleet must share one CA (workers trust only it). The first controller
   * records its CA's fingerprint; one started with another CA refuses, saying what to copy.
   */
  async checkFleetCa(fingerprint: string, dataDir: string): Promise<void> {
    const key = 'fleet.caFingerprint';
    const row = await this.db.setting.findUnique({ where: { key } });
    if (!row) {
      await this.db.setting.upsert({ where: { key }, create: { key, value: JSON.stringify(fingerprint) }, update: {} });
      return;
    }
    const recorded = JSON.parse(row.value) as unknown;
    if (recorded !== fingerprint) {
      throw new Error(
        `this controller's CA (${fingerprint}) is not the fleet's CA recorded in the database (${String(recorded)}). ` +
          `Every controller of a fleet must use the same CA: copy pki/ca.pem and pki/ca-key.pem from an existing controller's data dir into ${dataDir}/pki ` +
          '(or pass --tls-ca/--tls-cert/--tls-key issued by the fleet CA), then start again.',
      );
    }
  }
  /**
   * Every controller of a fleet must hold the fleet's key-encryption key (any of them may seal a
   * VM's secrets, any may open them for a session). The current key's id is recorded on first
   * start and by `rotate-key`; a controller whose keyring lacks it refuses to start.
   */
  async checkFleetSecretsKey(keys: { current(): { id: string }; byId(id: string): Buffer | undefined; readonly describe: string }, dataDir: string): Promise<void> {
    const row = await this.db.setting.findUnique({ where: { key: FLEET_SECRETS_KEY_SETTING } });
    if (!row) {
      await this.db.setting.upsert({ where: { key: FLEET_SECRETS_KEY_SETTING }, create: { key: FLEET_SECRETS_KEY_SETTING, value: JSON.stringify(keys.current().id) }, update: {} });
      return;
    }
    const recorded = JSON.parse(row.value) as unknown;
    if (typeof recorded === 'string' && !keys.byId(recorded)) {
      throw new Error(
        `this controller's secrets key (${keys.describe}, key ${keys.current().id}) is not the fleet's key ${recorded} recorded in the database. ` +
          `Every controller of a fleet must hold it: copy secrets.key (mode 0600) from an existing controller's data dir into ${dataDir}, or use the same FLEET_SECRETS_KEY / --secrets-key-command; ` +
          'see docs/operations.md, "Secrets at rest".',
      );
    }
  }
}

/** The settings row holding the id of the fleet's current secrets key (secrets/rotate-key.ts moves it). */
export const FLEET_SECRETS_KEY_SETTING = 'fleet.secretsKeyId';
