// Fleet-wide settings kept in the database (one JSON value per key).
import type { FleetDb } from '@fleet/db';
import type { SchedulerProfile } from './scheduler/placement.ts';

export class SettingsService {
  private profileCache: SchedulerProfile | undefined;

  constructor(
    private readonly db: FleetDb,
    private readonly defaultProfile: SchedulerProfile,
  ) {}

  async schedulerProfile(): Promise<SchedulerProfile> {
    if (this.profileCache) return this.profileCache;
    const row = await this.db.setting.findUnique({ where: { key: 'scheduler.profile' } });
    const value = row ? (JSON.parse(row.value) as unknown) : undefined;
    this.profileCache = value === 'spread' || value === 'pack' ? value : this.defaultProfile;
    return this.profileCache;
  }

  async setSchedulerProfile(profile: SchedulerProfile): Promise<void> {
    const value = JSON.stringify(profile);
    await this.db.setting.upsert({ where: { key: 'scheduler.profile' }, create: { key: 'scheduler.profile', value }, update: { value } });
    this.profileCache = profile;
  }
}
