export { OciError, isOciError, type OciErrorCode } from './errors.ts';
export {
  type ImageReference,
  isRegistryReference,
  parseImageReference,
  formatImageReference,
  pinnedReference,
  isDigest,
  isTag,
} from './reference.ts';
export {
  RegistryClient,
  MANIFEST_MEDIA_TYPES,
  parseDescriptor,
  selectPlatform,
  type RegistryAccess,
  type RegistryClientOptions,
  type Platform,
  type Descriptor,
  type FetchedManifest,
  type TransferProgress,
} from './client.ts';
export { downloadBlobs, pullBlobs, type BlobJob, type PullBlobsOptions } from './pull.ts';
export { parseChallenges, type AuthChallenge } from './auth.ts';
