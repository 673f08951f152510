/**
 * The exact JavaScript interface of the macOS half of the addon (src/darwin/*.mm). Everything
 * above it (src/vz.ts, the worker's vz driver and VM host process) is written and tested against
 * this interface with a fake; the Objective-C++ behind it has NOT been compiled or run on a Mac
 * yet (docs/macos.md).
 *
 * Threading model of the native side: each VirtualMachine owns a private serial dispatch queue;
 * every Virtualization.framework call runs on it. Results come back to JS as events through one
 * thread-safe function per object (never a direct call from a foreign thread). Operations take a
 * request id and complete with a `{ type: 'done', id, error? }` event.
 */

/** An NSError as the addon reports it. `domain` is e.g. "VZErrorDomain"; `code` is VZErrorCode. */
export interface VzNativeError {
  domain: string;
  code: number;
  message: string;
  /** NSLocalizedFailureReasonErrorKey, when present. */
  reason?: string;
}

/** VZVirtualMachineState as a string (saving/restoring exist on macOS 14+). */
export type VzNativeState = 'stopped' | 'running' | 'paused' | 'error' | 'starting' | 'pausing' | 'resuming' | 'stopping' | 'saving' | 'restoring';

export const VZ_NATIVE_STATES: readonly VzNativeState[] = ['stopped', 'running', 'paused', 'error', 'starting', 'pausing', 'resuming', 'stopping', 'saving', 'restoring'];

export type VzEvent =
  /** KVO on VZVirtualMachine.state. */
  | { type: 'state'; state: VzNativeState }
  /** Completion of the operation with this request id. */
  | { type: 'done'; id: number; error?: VzNativeError }
  /** VZVirtualMachineDelegate guestDidStopVirtualMachine: the guest powered off. */
  | { type: 'guestStopped' }
  /** VZVirtualMachineDelegate virtualMachine:didStopWithError:. */
  | { type: 'stoppedWithError'; error: VzNativeError }
  /** VZVirtualMachineDelegate virtualMachine:networkDevice:attachmentWasDisconnectedWithError: (macOS 12). */
  | { type: 'networkDisconnected'; error: VzNativeError }
  /** VZMacOSInstaller progress.fractionCompleted (0..1), for the install with this request id. */
  | { type: 'installProgress'; id: number; fraction: number };

export type VzDiskCaching = 'automatic' | 'cached' | 'uncached';
export type VzDiskSync = 'full' | 'fsync' | 'none';

export interface VzDiskConfig {
  path: string;
  readOnly: boolean;
  /** VZDiskImageCachingMode (macOS 12). Tart uses 'cached' for Linux guests. */
  caching?: VzDiskCaching;
  /** VZDiskImageSynchronizationMode (macOS 12). */
  sync?: VzDiskSync;
}

export interface VzMacPlatform {
  /** VZMacHardwareModel.dataRepresentation (Tart config.json "hardwareModel", base64-decoded). */
  hardwareModel: Uint8Array;
  /** VZMacMachineIdentifier.dataRepresentation (Tart config.json "ecid", base64-decoded). */
  machineIdentifier: Uint8Array;
  /** nvram.bin of the bundle (VZMacAuxiliaryStorage). */
  auxiliaryStoragePath: string;
}

export type VzLinuxBoot =
  /** VZEFIBootLoader (macOS 13) with a variable store file; created when `create` is true. */
  | { kind: 'efi'; variableStorePath: string; create: boolean }
  /** VZLinuxBootLoader (macOS 11). */
  | { kind: 'kernel'; kernelPath: string; initrdPath?: string; cmdline: string };

/** What `new VirtualMachine(config, onEvent)` accepts (validated by src/vz.ts before it gets here). */
export interface VzMachineConfig {
  guest: 'macos' | 'linux';
  /** Clamped by the caller to limits().minCpus..maxCpus; the addon clamps again. */
  cpus: number;
  memoryBytes: number;
  disks: VzDiskConfig[];
  /**
   * The NIC: VZVirtioNetworkDeviceConfiguration + VZFileHandleNetworkDeviceAttachment on a
   * connected SOCK_DGRAM socket. The addon dup()s `fd` (the caller keeps and closes its own).
   */
  network?: { fd: number; mac: string; mtu?: number };
  /** Serial console (virtio console) appended to this file. */
  serialLogPath?: string;
  /** Virtio socket device (guest agent). Default true. */
  vsock?: boolean;
  /** Virtio entropy device. Default true; dropped when `suspendable` (Tart does the same). */
  entropy?: boolean;
  /**
   * Display in pixels (macOS: VZMacGraphicsDeviceConfiguration; Linux: virtio-gpu on 13+).
   * Input devices follow from the guest (no option): macOS guests get a USB keyboard plus the Mac
   * keyboard (host 14+) and a USB screen-coordinate pointer plus the Mac trackpad, as Tart
   * attaches them (guests before macOS 13 have drivers for the USB devices only); suspendable
   * macOS guests get only the Mac keyboard and trackpad. Linux guests with a display get the USB
   * keyboard and pointer.
   */
  display?: { width: number; height: number; ppi?: number };
  macos?: VzMacPlatform;
  linux?: VzLinuxBoot;
  /** Build a configuration that passes validateSaveRestoreSupport (macOS 14, macOS guests). */
  suspendable?: boolean;
}

export interface VzStartOptions {
  /** VZMacOSVirtualMachineStartOptions.startUpFromMacOSRecovery (macOS 13, macOS guests). */
  recovery?: boolean;
}

/** One native VirtualMachine (one VZVirtualMachine on its own serial queue). */
export interface NativeVirtualMachine {
  /** VZVirtualMachine.state, read on the VM's queue. */
  state(): VzNativeState;
  /** canStart/canPause/canResume/canRequestStop/canStop (macOS 12), read on the queue. */
  can(): { start: boolean; pause: boolean; resume: boolean; requestStop: boolean; stop: boolean };
  start(id: number, opts: VzStartOptions): void;
  pause(id: number): void;
  resume(id: number): void;
  /** Hard stop (stopWithCompletionHandler:, macOS 12). */
  stop(id: number): void;
  /** requestStopWithError: (ACPI power button; a macOS guest shows a dialog). Completes at once. */
  requestStop(id: number): void;
  /** saveMachineStateToURL:completionHandler: (macOS 14; VM must be paused). */
  saveState(id: number, path: string): void;
  /** restoreMachineStateFromURL:completionHandler: (macOS 14; VM must be stopped). Then resume. */
  restoreState(id: number, path: string): void;
  /** VZMacOSInstaller on this (stopped) VM; installProgress events carry `id`. */
  install(id: number, ipswPath: string): void;
  /** Cancels a running install (NSProgress.cancel). */
  cancelInstall(): void;
  /** Lets the process exit while the VM object exists (thread-safe function unref). */
  unref(): void;
  ref(): void;
  /** Drops the event bridge. Does not stop the VM. Idempotent. */
  close(): void;
}

export interface VzLimits {
  minCpus: number;
  maxCpus: number;
  minMemoryBytes: number;
  maxMemoryBytes: number;
}

/** VZMacOSRestoreImage (macOS 12) as loaded from an .ipsw. */
export interface VzRestoreImageInfo {
  buildVersion: string;
  /** "major.minor.patch". */
  osVersion: string;
  /** mostFeaturefulSupportedConfiguration: absent when this host cannot run the image. */
  supported?: { hardwareModel: Uint8Array; minCpus: number; minMemoryBytes: number };
}

export interface VmnetStartOptions {
  /** VMNET_SHARED_MODE (NAT through bridge100) or VMNET_HOST_MODE. */
  mode: 'shared' | 'host';
  /** vmnet_start_address_key / vmnet_end_address_key / vmnet_subnet_mask_key (macOS 10.15). */
  startAddress?: string;
  endAddress?: string;
  subnetMask?: string;
  /** vmnet_enable_isolation_key (macOS 11): interfaces cannot talk to each other. */
  isolation?: boolean;
}

export interface VmnetStarted {
  /** vmnet_mac_address_key: the MAC vmnet gave the interface (the guest keeps its own). */
  mac: string;
  mtu: number;
  maxPacketSize: number;
  startAddress?: string;
  endAddress?: string;
  subnetMask?: string;
}

export type VmnetEvent =
  | { type: 'started'; info: VmnetStarted }
  /**
   * vmnet_start_interface failed: `status` is the vmnet_return_t name (e.g. "VMNET_FAILURE"; a
   * value the addon has no name for is "vmnet_return_t <n>"), `euid` the process's effective uid
   * when it called vmnet_start_interface. Without root, vmnet answers the generic VMNET_FAILURE
   * (1001), not VMNET_INVALID_ACCESS, so the uid is what tells the two apart.
   */
  | { type: 'error'; status: string; code: number; euid?: number }
  /** VMNET_INTERFACE_PACKETS_AVAILABLE (coalesced: at most one pending at a time). */
  | { type: 'readable' }
  | { type: 'stopped' };

/** One vmnet interface. Reads and writes happen on the JS thread (vmnet_read/vmnet_write are synchronous). */
export interface NativeVmnetInterface {
  /**
   * vmnet_read into the receive area given at construction: returns the frame count (0 = none
   * queued) and fills offsets/lengths. After it returns fewer than `batch`, the next 'readable'
   * event re-arms.
   */
  read(): number;
  /** vmnet_write of `count` frames described by offsets/lengths into `buf`; returns how many were accepted. */
  write(buf: Uint8Array, offsets: Uint32Array, lengths: Uint32Array, count: number): number;
  stats(): { rxFrames: number; rxBytes: number; rxCalls: number; txFrames: number; txBytes: number; txDrops: number; txErrors: number; lastStatus: string | null };
  /** vmnet_stop_interface; a 'stopped' event follows. Idempotent. */
  stop(): void;
  unref(): void;
  ref(): void;
}

/** The module object exported by build/Release/native_vz.node on darwin (besides the fd utilities and FramePort it shares with Linux). */
export interface VzAddon {
  platform: 'darwin';
  /** VZVirtualMachine.isSupported (macOS 11). */
  isSupported(): boolean;
  limits(): VzLimits;
  /** New VZMacMachineIdentifier().dataRepresentation (macOS 12). */
  newMachineIdentifier(): Uint8Array;
  /** Whether VZMacHardwareModel(dataRepresentation:) is valid and isSupported on this host. */
  hardwareModelSupported(data: Uint8Array): boolean;
  /** VZMacAuxiliaryStorage initCreatingStorageAtURL:hardwareModel:options: (overwrite). Throws with nsDomain/nsCode. */
  createAuxiliaryStorage(path: string, hardwareModel: Uint8Array): void;
  /** VZMacOSRestoreImage loadFileURL:completionHandler:. */
  loadRestoreImage(path: string, cb: (error: VzNativeError | null, info: VzRestoreImageInfo | null) => void): void;
  /** Builds and validates the configuration; throws an Error with nsDomain/nsCode (validate's message). */
  VirtualMachine: new (config: VzMachineConfig, onEvent: (e: VzEvent) => void) => NativeVirtualMachine;
  /** Starts an interface (needs root); events report the outcome. */
  VmnetInterface: new (
    opts: VmnetStartOptions,
    area: ArrayBuffer,
    offsets: Uint32Array,
    lengths: Uint32Array,
    frameSize: number,
    batch: number,
    onEvent: (e: VmnetEvent) => void,
  ) => NativeVmnetInterface;
}

/** VZErrorCode values (Virtualization/VZError.h). */
export const VZErrorCode = {
  Internal: 1,
  InvalidVirtualMachineConfiguration: 2,
  InvalidVirtualMachineState: 3,
  InvalidVirtualMachineStateTransition: 4,
  InvalidDiskImage: 5,
  VirtualMachineLimitExceeded: 6,
  NetworkError: 7,
  OutOfDiskSpace: 8,
  OperationCancelled: 9,
  NotSupported: 10,
  Save: 11,
  Restore: 12,
  RestoreImageCatalogLoadFailed: 10001,
  InvalidRestoreImageCatalog: 10002,
  NoSupportedRestoreImagesInCatalog: 10003,
  RestoreImageLoadFailed: 10004,
  InvalidRestoreImage: 10005,
  InstallationRequiresUpdate: 10006,
  InstallationFailed: 10007,
} as const;

export const VZ_ERROR_DOMAIN = 'VZErrorDomain';
