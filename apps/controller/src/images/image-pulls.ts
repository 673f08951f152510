// What a worker needs to pull a VM's registry image (VmAssignment.imagePull): the pinned reference
// (registry/repository@sha256:…, the digest recorded when the VM was created) and how to reach the
// registry, credentials included. Local images need no pull (null).
import { isDigest, isRegistryReference, parseImageReference, pinnedReference } from '@fleet/oci';
import type { ImagePull } from '@fleet/proto';
import type { RegistryService } from './registry-service.ts';

export interface VmImage {
  image: string;
  imageDigest: string;
}

/** registry/repository@digest of a VM's image, with its registry; null for local images. */
export function pinnedImageOf(vm: VmImage): { registry: string; reference: string } | null {
  if (!vm.imageDigest || !isRegistryReference(vm.image)) return null;
  try {
    const ref = parseImageReference(vm.image);
    if (!isDigest(vm.imageDigest)) return null;
    return { registry: ref.registry, reference: pinnedReference(ref, vm.imageDigest) };
  } catch {
    return null; // validated when the VM was created; a row that does not parse gets no pull
  }
}

/** The pull of one VM's image, or null for a local image. */
export async function imagePullFor(vm: VmImage, registries: Pick<RegistryService, 'accessFor'>): Promise<ImagePull | null> {
  const p = pinnedImageOf(vm);
  if (!p) return null;
  return { reference: p.reference, access: await registries.accessFor(p.registry) };
}

/**
 * `imagePullFor` of many VMs (a worker's whole desired state) with one registry query.
 * Keys: VM ids; VMs with local images are absent.
 */
export async function imagePullsFor<V extends VmImage & { id: string }>(vms: readonly V[], registries: Pick<RegistryService, 'accessForHosts'>): Promise<Map<string, ImagePull>> {
  const pinned = new Map<string, { registry: string; reference: string }>();
  for (const vm of vms) {
    const p = pinnedImageOf(vm);
    if (p) pinned.set(vm.id, p);
  }
  const out = new Map<string, ImagePull>();
  if (pinned.size === 0) return out;
  const access = await registries.accessForHosts([...pinned.values()].map((p) => p.registry));
  for (const [id, p] of pinned) out.set(id, { reference: p.reference, access: access.get(p.registry)! });
  return out;
}
