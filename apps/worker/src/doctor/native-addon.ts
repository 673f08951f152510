// @fleet/native-vz: the addon every real driver needs (socketpairs/TAP on Linux, Virtualization.framework on macOS).
import { fail, ok, type Finding } from './check.ts';

export async function checkNativeAddon(load: () => Promise<{ platform: string }> = () => import('@fleet/native-vz')): Promise<Finding> {
  try {
    const addon = await load();
    return ok(`@fleet/native-vz loaded (${addon.platform} build)`);
  } catch (error) {
    const cause = (error as Error & { cause?: unknown }).cause;
    const why = cause instanceof Error ? `: ${cause.message.split('\n')[0]}` : '';
    return fail(`${(error as Error).message.split(';')[0]}${why}`, 'pnpm --filter @fleet/native-vz rebuild   (needs g++, make, python3 and Node headers)');
  }
}
