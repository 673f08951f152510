// REST API schemas (TypeBox): fastify validates every request against them, the
// OpenAPI document is generated from them, and the CLI imports the static types.
import { Type, type Static } from '@sinclair/typebox';
import { LABEL_KEY_MAX_LENGTH, LABEL_KEY_PATTERN, LABEL_VALUE_MAX_LENGTH, LABEL_VALUE_PATTERN, MAX_LABELS } from './label-syntax.ts';
import { MAC_PATTERN, NAME_PATTERN, VM_STATES } from './syntax.ts';



export const Name = Type.String({
  pattern: NAME_PATTERN,
  minLength: 1,
  maxLength: 63,
  description: 'lower-case letters, digits and dashes; starts and ends with a letter or digit; at most 63 characters',
});

/** key=value labels (and selectors) in Kubernetes label syntax; values are strings, never objects. */
export const Labels = Type.Unsafe<Record<string, string>>({
  type: 'object',
  maxProperties: MAX_LABELS,
  propertyNames: { type: 'string', minLength: 1, maxLength: LABEL_KEY_MAX_LENGTH, pattern: LABEL_KEY_PATTERN },
  patternProperties: { [LABEL_KEY_PATTERN]: Type.String({ maxLength: LABEL_VALUE_MAX_LENGTH, pattern: LABEL_VALUE_PATTERN }) },
  additionalProperties: false,
  description:
    'key=value string pairs in Kubernetes label syntax: key = optional DNS-subdomain prefix (at most 253 characters) + "/" + a name of 1-63 letters, digits, "-", "_", "." starting and ending with a letter or digit; value = empty or the same as a name; at most 64',
});

/** Free text that reaches a process or a file (image references, ...): no NUL or other control characters. */
const NO_CONTROL = '^[^\\u0000-\\u001f\\u007f]*$';

export const ErrorBody = Type.Object(
  { error: Type.Object({ code: Type.String(), message: Type.String(), details: Type.Optional(Type.Unknown()) }) },
  { $id: 'Error' },
);
export type ErrorBody = Static<typeof ErrorBody>;

// ------------------------------------------------------------------ VMs

export const VmStateSchema = Type.Union(VM_STATES.map((s) => Type.Literal(s)));
const Os = Type.Union([Type.Literal('linux'), Type.Literal('macos')]);
const RestartPolicy = Type.Union([Type.Literal('never'), Type.Literal('on-failure')]);
const DisconnectPolicy = Type.Union([Type.Literal('reschedule'), Type.Literal('wait')], {
  description:
    'while its worker is unreachable: "reschedule" (default) — the worker stops the VM after fenceAfter and the controller re-places it per restartPolicy after lostAfter, never both at once; "wait" — it keeps running, nothing is re-placed, and it continues when the worker returns',
});
const PowerState = Type.Union([Type.Literal('running'), Type.Literal('stopped')]);
const Driver = Type.Union([Type.Literal(''), Type.Literal('synthetic'), Type.Literal('qemu'), Type.Literal('vz')]);

const NetworkRule = Type.String({
  minLength: 1,
  maxLength: 43,
  pattern: '^(@host|[0-9]{1,3}(\\.[0-9]{1,3}){3}(/[0-9]{1,2})?)$',
  description: 'an IPv4 CIDR ("10.0.0.0/8"), a bare IPv4 address, or "@host" (the VM\'s worker at its gateway address: allowing it grants host access)',
});
export const NetworkModeSchema = Type.Union([Type.Literal('nat'), Type.Literal('host-only'), Type.Literal('none')], {
  description:
    'the worker network the VM\'s NIC joins (issue 18): "nat" (default) — the worker\'s NAT network, out to the world by masquerade; "host-only" — the worker\'s host-only network: the worker and the other VMs on it that the policy allows, never beyond; "none" — no NIC at all (allow, block, blockLocal and mac are refused). A VM is placed only on a worker that offers its mode',
});
export const WorkerNetworkModeSchema = Type.Union([Type.Literal('nat'), Type.Literal('host-only')]);

/** A custom MAC: unicast, not all zero, six ":"-separated hex octets (either case; stored lower case). */
export const MacAddress = Type.String({
  pattern: MAC_PATTERN,
  description:
    'the NIC\'s MAC, chosen by the operator: six two-digit hex octets separated by ":" (upper case accepted, stored and returned lower case), unicast (the least significant bit of the first octet is 0) and not all zero, e.g. "02:00:5e:10:00:01" (02: locally administered). Omitted: the worker derives one per instance. The scheduler never places two VMs with one MAC on a worker',
});

export const VmNetwork = Type.Object(
  {
    mode: Type.Optional(NetworkModeSchema),
    allow: Type.Optional(Type.Array(NetworkRule, { maxItems: 64, description: 'destinations the VM may reach besides global (public) addresses' })),
    block: Type.Optional(Type.Array(NetworkRule, { maxItems: 64, description: 'destinations the VM may not reach; the longest prefix wins, block wins a tie' })),
    blockLocal: Type.Optional(Type.Boolean({ description: 'Anka\'s "block local": ARP only for the gateway, and local sources reach the VM only when allowed (the worker itself is out of reach except DHCP and DNS by default anyway, unless "@host" is allowed)' })),
  },
  { additionalProperties: false, $id: 'VmNetwork' },
);
export type VmNetwork = Static<typeof VmNetwork>;

// A guest login password for images that cannot take the fleet's key (macOS / Tart images).
// Write-only: no response, event or log carries it; views show only whether one is set.
const VmPassword = Type.String({ minLength: 1, maxLength: 256, pattern: '^[^\\u0000-\\u001f\\u007f]+$', description: 'SSH password for the guest user (write-only; never returned)' });

const ImageRef = Type.String({ minLength: 1, maxLength: 512, pattern: NO_CONTROL, description: 'a local image name or a registry reference (registry/repository[:tag][@sha256:…]); no control characters' });

export const VmCreate = Type.Object(
  {
    name: Name,
    image: ImageRef,
    os: Type.Optional(Os),
    driver: Type.Optional(Driver),
    cpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 256 })),
    memoryMib: Type.Optional(Type.Integer({ minimum: 128, maximum: 4 * 1024 * 1024 })),
    diskGib: Type.Optional(Type.Integer({ minimum: 1, maximum: 65536 })),
    username: Type.Optional(Type.String({ maxLength: 64, pattern: '^[a-z_][a-z0-9_-]*$|^$' })),
    password: Type.Optional(VmPassword),
    labels: Type.Optional(Labels),
    selector: Type.Optional(Labels),
    priority: Type.Optional(Type.Integer({ minimum: -1000, maximum: 1000 })),
    restartPolicy: Type.Optional(RestartPolicy),
    disconnectPolicy: Type.Optional(DisconnectPolicy),
    powerState: Type.Optional(PowerState),
    network: Type.Optional(VmNetwork),
    mac: Type.Optional(MacAddress),
  },
  { additionalProperties: false, $id: 'VmCreate' },
);
export type VmCreate = Static<typeof VmCreate>;

export const VmUpdate = Type.Object(
  {
    image: Type.Optional(ImageRef),
    cpus: Type.Optional(Type.Integer({ minimum: 1, maximum: 256 })),
    memoryMib: Type.Optional(Type.Integer({ minimum: 128, maximum: 4 * 1024 * 1024 })),
    labels: Type.Optional(Labels),
    selector: Type.Optional(Labels),
    priority: Type.Optional(Type.Integer({ minimum: -1000, maximum: 1000 })),
    restartPolicy: Type.Optional(RestartPolicy),
    disconnectPolicy: Type.Optional(DisconnectPolicy),
    powerState: Type.Optional(PowerState),
    password: Type.Optional(Type.Union([VmPassword, Type.Null()], { description: 'a new SSH password for the guest user, or null to remove it (write-only)' })),
    network: Type.Optional(
      Type.Object(
        {
          mode: Type.Optional(NetworkModeSchema),
          allow: VmNetwork.properties.allow,
          block: VmNetwork.properties.block,
          blockLocal: VmNetwork.properties.blockLocal,
        },
        { additionalProperties: false, description: 'the fields given replace the stored ones; only while the VM is stopped (state and powerState stopped) or not placed (pending, failed): 409 otherwise' },
      ),
    ),
    mac: Type.Optional(Type.Union([MacAddress, Type.Null()], { description: 'a new custom MAC, or null to let the worker derive one; only while the VM is stopped or not placed (409 otherwise)' })),
  },
  { additionalProperties: false, minProperties: 1, $id: 'VmUpdate' },
);
export type VmUpdate = Static<typeof VmUpdate>;

/** How far a transfer (an image pull or push) got. */
export const TransferProgressObject = Type.Object({
  bytesDone: Type.Number(),
  bytesTotal: Type.Number({ description: '0 while unknown' }),
  percent: Type.Integer({ minimum: 0, maximum: 100 }),
});
export type TransferProgressObject = Static<typeof TransferProgressObject>;

export const VmObject = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    state: VmStateSchema,
    reason: Type.String({ description: 'why the VM is in this state (e.g. why it is still pending)' }),
    image: Type.String(),
    imageDigest: Type.Union([Type.String(), Type.Null()], { description: 'registry images: the manifest digest the reference resolved to when the VM was created (every attempt runs it); null for local images' }),
    pull: Type.Union([TransferProgressObject, Type.Null()], {
      description: "the worker is pulling the VM's image: how far it got (null otherwise)",
    }),
    os: Os,
    driver: Type.String(),
    cpus: Type.Integer(),
    memoryMib: Type.Integer(),
    diskGib: Type.Integer(),
    username: Type.String(),
    passwordSet: Type.Boolean({ description: 'whether sessions may log in with a password (the password itself is never returned)' }),
    labels: Type.Record(Type.String(), Type.String()),
    selector: Type.Record(Type.String(), Type.String()),
    network: Type.Object({ mode: NetworkModeSchema, allow: Type.Array(Type.String()), block: Type.Array(Type.String()), blockLocal: Type.Boolean() }),
    priority: Type.Integer(),
    restartPolicy: RestartPolicy,
    disconnectPolicy: DisconnectPolicy,
    restartCount: Type.Integer(),
    powerState: PowerState,
    generation: Type.Integer(),
    observedGeneration: Type.Integer(),
    attempt: Type.Integer(),
    worker: Type.Union([Type.String(), Type.Null()]),
    ip: Type.Union([Type.String(), Type.Null()]),
    mac: Type.Union([Type.String(), Type.Null()], {
      description: "the NIC's MAC, lower case: the custom one when the spec sets it (macSource \"custom\"), else the one the worker reported for the instance (\"worker\"); null before that, and for network mode none",
    }),
    macSource: Type.Union([Type.Literal('custom'), Type.Literal('worker'), Type.Null()], { description: 'where mac comes from: the spec ("custom"), the worker ("worker"), or nowhere yet (null)' }),
    createdBy: Type.String(),
    createdAt: Type.String(),
    updatedAt: Type.String(),
    scheduledAt: Type.Union([Type.String(), Type.Null()]),
    runningAt: Type.Union([Type.String(), Type.Null()]),
    restartAt: Type.Union([Type.String(), Type.Null()]),
    networkCounters: Type.Optional(
      Type.Union([
        Type.Object({
          attempt: Type.Integer(),
          fromVm: Type.Record(Type.String(), Type.Integer(), { description: 'frames the VM sent, by packet-filter verdict ("pass", "ip_spoof", "local_dst", ...); "uplink_queue_full": passed by the filter, dropped because the bridge side did not take them; "bad_checksum_header": dropped before the filter, a DHCP message whose virtio-net header put its pending checksum outside the frame' }),
          fromHost: Type.Record(Type.String(), Type.Integer(), { description: 'frames sent to the VM, by verdict; "vm_queue_full": passed by the filter, dropped because the VM\'s NIC did not take them in time' }),
          sampledAt: Type.String(),
        }),
        Type.Null(),
      ], { description: "the worker's packet-filter counters for the running instance (refreshed every few seconds); null when unknown" }),
    ),
  },
  { $id: 'Vm' },
);
export type VmObject = Static<typeof VmObject>;

export const VmListQuery = Type.Object(
  {
    state: Type.Optional(VmStateSchema),
    worker: Type.Optional(Name),
    watch: Type.Optional(Type.Boolean({ description: 'stream NDJSON {type: ADDED|MODIFIED|DELETED, vm} after the initial list' })),
  },
  { additionalProperties: false },
);
export const WatchQuery = Type.Object({ watch: Type.Optional(Type.Boolean({ description: 'stream NDJSON {type: ADDED|MODIFIED|DELETED, vm} lines: the current VM, then its changes' })) }, { additionalProperties: false });

/** One line of a ?watch=true stream (application/x-ndjson; blank lines are keepalives). */
export const VmWatchLine = Type.Object({
  type: Type.Union([Type.Literal('ADDED'), Type.Literal('MODIFIED'), Type.Literal('DELETED'), Type.Literal('ERROR')]),
  vm: Type.Optional(VmObject),
  error: Type.Optional(Type.Object({ code: Type.String(), message: Type.String() }, { description: 'type ERROR: why the stream ends (slow_consumer, unauthorized)' })),
});

// ------------------------------------------------------------------ workers

export const WorkerNetworkObject = Type.Object(
  {
    mode: WorkerNetworkModeSchema,
    subnet: Type.String({ description: 'IPv4 CIDR, e.g. "192.168.64.0/24"' }),
    gateway: Type.String({ description: "the worker's address on it" }),
    addresses: Type.Integer({ description: 'VM addresses it can hand out (one per VM instance of this mode, any power state); 0 = not limited / not reported' }),
    interface: Type.String({ description: 'the worker\'s interface for it (a bridge, or "vmnet shared" / "vmnet host" on macOS)' }),
    used: Type.Integer({ description: 'addresses held: VMs of this mode placed on the worker whose instance it has not confirmed gone' }),
  },
  { $id: 'WorkerNetwork' },
);
export type WorkerNetworkObject = Static<typeof WorkerNetworkObject>;

export const WorkerObject = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    status: Type.Union([Type.Literal('online'), Type.Literal('offline')]),
    connected: Type.Boolean(),
    paused: Type.Boolean(),
    hostname: Type.String(),
    os: Type.String(),
    arch: Type.String(),
    version: Type.String(),
    labels: Type.Record(Type.String(), Type.String()),
    drivers: Type.Array(Type.String()),
    capacity: Type.Object({
      cpus: Type.Integer(),
      memoryMib: Type.Integer(),
      vmSlots: Type.Integer(),
      macosSlots: Type.Integer(),
      natAddresses: Type.Integer({
        description:
          "VM addresses the worker's NAT network can hand out (e.g. 253 for a /24): the worker holds one per VM instance, in any power state, so it takes at most this many VMs. 0 = not limited (or not reported)",
      }),
    }),
    used: Type.Object({
      cpus: Type.Integer(),
      memoryMib: Type.Integer(),
      vms: Type.Integer({ description: 'VMs placed on the worker whose instance it has not yet confirmed gone, in any state (stopped ones included)' }),
      macosVms: Type.Integer(),
      natAddresses: Type.Integer({ description: 'NAT addresses held: one per VM in network mode nat counted in vms (counted against capacity.natAddresses when that is > 0); host-only VMs hold an address of the host-only network (networks[].used), mode none VMs none' }),
    }),
    networks: Type.Array(WorkerNetworkObject, {
      description:
        'the VM networks the worker offers, as its last Hello reported them (issue 18). Empty: not reported (an older worker, or the synthetic driver): it is treated as offering "nat" only, with capacity.natAddresses',
    }),
    lastSeenAt: Type.Union([Type.String(), Type.Null()]),
    createdAt: Type.String(),
    /** When the worker's newest valid client certificate expires (it renews itself well before). */
    certificateExpiresAt: Type.Union([Type.String(), Type.Null()]),
  },
  { $id: 'Worker' },
);
export type WorkerObject = Static<typeof WorkerObject>;

// ------------------------------------------------------------------ events

export const EventObject = Type.Object(
  {
    id: Type.Integer(),
    at: Type.String(),
    kind: Type.String(),
    level: Type.String(),
    message: Type.String(),
    vm: Type.Union([Type.String(), Type.Null()]),
    vmId: Type.Union([Type.String(), Type.Null()]),
    workerId: Type.Union([Type.String(), Type.Null()]),
    actor: Type.String(),
    data: Type.Unknown(),
  },
  { $id: 'Event' },
);
export type EventObject = Static<typeof EventObject>;

export const EventPage = Type.Object({
  events: Type.Array(EventObject),
  nextCursor: Type.Union([Type.Integer(), Type.Null()], { description: 'pass as ?cursor= for the next page' }),
});
export type EventPage = Static<typeof EventPage>;

export const EventQueryString = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100, description: 'events per page (a decimal integer, 1-1000)' })),
    cursor: Type.Optional(Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER, description: 'an event id: nextCursor of the previous page (a decimal integer)' })),
    order: Type.Optional(Type.Union([Type.Literal('asc'), Type.Literal('desc')])),
    vm: Type.Optional(Name),
    worker: Type.Optional(Name),
    kind: Type.Optional(Type.String({ maxLength: 64 })),
    actor: Type.Optional(Type.String({ maxLength: 128 })),
  },
  { additionalProperties: false },
);
export type EventQueryString = Static<typeof EventQueryString>;

/** GET /v1/vms/{name}/events: the VM is in the path, so no vm / worker filters. */
export const VmEventQueryString = Type.Object(
  {
    limit: EventQueryString.properties.limit,
    cursor: EventQueryString.properties.cursor,
    order: Type.Optional(Type.Union([Type.Literal('asc'), Type.Literal('desc')], { description: 'default asc (oldest first)' })),
    kind: EventQueryString.properties.kind,
    actor: EventQueryString.properties.actor,
  },
  { additionalProperties: false },
);
export type VmEventQueryString = Static<typeof VmEventQueryString>;

// ------------------------------------------------------------------ tokens

export const RoleSchema = Type.Union([Type.Literal('read'), Type.Literal('write'), Type.Literal('connect'), Type.Literal('admin')]);

export const TokenCreate = Type.Object(
  {
    name: Name,
    roles: Type.Array(RoleSchema, { minItems: 1, uniqueItems: true }),
    expiresInHours: Type.Optional(Type.Integer({ minimum: 1, maximum: 24 * 3650 })),
  },
  { additionalProperties: false, $id: 'TokenCreate' },
);
export type TokenCreate = Static<typeof TokenCreate>;

export const TokenObject = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    roles: Type.Array(RoleSchema),
    createdBy: Type.String(),
    createdAt: Type.String(),
    expiresAt: Type.Union([Type.String(), Type.Null()]),
    lastUsedAt: Type.Union([Type.String(), Type.Null()]),
    revokedAt: Type.Union([Type.String(), Type.Null()]),
  },
  { $id: 'Token' },
);
export type TokenObject = Static<typeof TokenObject>;

export const TokenCreated = Type.Object({ token: Type.String({ description: 'shown once; store it now' }), info: TokenObject });
export type TokenCreated = Static<typeof TokenCreated>;

export const BootstrapTokenCreate = Type.Object(
  {
    name: Type.Optional(Name),
    uses: Type.Optional(Type.Integer({ minimum: 1, maximum: 10000, description: 'enrollments allowed; default unlimited until expiry' })),
    expiresInHours: Type.Optional(Type.Integer({ minimum: 1, maximum: 24 * 365, default: 24 })),
  },
  { additionalProperties: false, $id: 'BootstrapTokenCreate' },
);
export type BootstrapTokenCreate = Static<typeof BootstrapTokenCreate>;

export const BootstrapTokenObject = Type.Object(
  {
    id: Type.String(),
    name: Type.String(),
    usesLeft: Type.Union([Type.Integer(), Type.Null()]),
    createdBy: Type.String(),
    createdAt: Type.String(),
    expiresAt: Type.Union([Type.String(), Type.Null()]),
    lastUsedAt: Type.Union([Type.String(), Type.Null()]),
    revokedAt: Type.Union([Type.String(), Type.Null()]),
  },
  { $id: 'BootstrapToken' },
);
export type BootstrapTokenObject = Static<typeof BootstrapTokenObject>;

export const BootstrapTokenCreated = Type.Object({
  token: Type.String(),
  info: BootstrapTokenObject,
  enrollCommand: Type.String({ description: 'the command to run on the new host' }),
});
export type BootstrapTokenCreated = Static<typeof BootstrapTokenCreated>;

// ------------------------------------------------------------------ misc

export const NameParam = Type.Object({ name: Name });
export type NameParam = Static<typeof NameParam>;

// ------------------------------------------------------------------ sessions

export const HostKeyObject = Type.Object({
  vm: Type.String(),
  hostKey: Type.Union([Type.String(), Type.Null()], { description: 'OpenSSH public key line; null before the first session of this boot' }),
  fingerprint: Type.Union([Type.String(), Type.Null()], { description: 'SHA256:… as ssh-keygen -lf prints it' }),
  seenAt: Type.Union([Type.String(), Type.Null()]),
  attempt: Type.Integer(),
});
export type HostKeyObject = Static<typeof HostKeyObject>;

export const SshAccessObject = Type.Object({
  vm: Type.String(),
  username: Type.String(),
  privateKey: Type.String({ description: 'OpenSSH private key for the guest user (secret)' }),
  hostKey: Type.Union([Type.String(), Type.Null()]),
  fingerprint: Type.Union([Type.String(), Type.Null()]),
});
export type SshAccessObject = Static<typeof SshAccessObject>;

export const ControllerInfo = Type.Object({
  version: Type.String(),
  protocolVersion: Type.Integer(),
  grpcAddress: Type.String({ description: 'host:port workers dial' }),
  caFingerprint: Type.String({ description: 'SHA-256 of the controller CA certificate' }),
  schedulerProfile: Type.Union([Type.Literal('pack'), Type.Literal('spread')]),
});
export type ControllerInfo = Static<typeof ControllerInfo>;

export const ControllerObject = Type.Object({
  id: Type.String({ description: 'changes on every start of the controller process' }),
  name: Type.String(),
  apiUrl: Type.String({ description: 'how the other controllers reach its REST API' }),
  grpcAddress: Type.String({ description: 'host:port workers dial' }),
  version: Type.String(),
  role: Type.Union([Type.Literal('leader'), Type.Literal('follower')]),
  alive: Type.Boolean({ description: 'its row kept changing lately (refreshed every 2 s)' }),
  connectedWorkers: Type.Integer({ description: 'worker streams it holds' }),
  startedAt: Type.String({ format: 'date-time' }),
  lastSeenAt: Type.String({ format: 'date-time' }),
});
export type ControllerObject = Static<typeof ControllerObject>;
export const ControllerList = Type.Object({ items: Type.Array(ControllerObject) });

/** GET /v1/health (no auth): 200 ok, 503 degraded while the database cannot take writes. */
export const Health = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('degraded')]),
  checks: Type.Object({
    storage: Type.Object({
      ok: Type.Boolean(),
      error: Type.Optional(Type.String({ description: 'what the last failure said' })),
      code: Type.Optional(Type.String({ description: 'SQLITE_FULL, 53100, P1001, ...' })),
      since: Type.Optional(Type.String({ format: 'date-time', description: 'when the storage was first seen failing' })),
      checkedAt: Type.Optional(Type.String({ format: 'date-time', description: 'when the write probe last ran' })),
    }),
  }),
  controller: Type.Optional(
    Type.Object({
      id: Type.String(),
      name: Type.String(),
      role: Type.Union([Type.Literal('leader'), Type.Literal('follower')], { description: 'leader: runs the scheduler and worker liveness; every controller serves the API and worker streams' }),
      leader: Type.Union([Type.String(), Type.Null()], { description: "the leader's name as this controller last saw it" }),
    }),
  ),
});
export type Health = Static<typeof Health>;
export type ServingController = NonNullable<Health['controller']>;
export type ControllerList = Static<typeof ControllerList>;

export const SchedulerSettings = Type.Object(
  { profile: Type.Union([Type.Literal('pack'), Type.Literal('spread')]) },
  { additionalProperties: false },
);
export type SchedulerSettings = Static<typeof SchedulerSettings>;

export const WhoAmI = Type.Object({ name: Type.String(), roles: Type.Array(RoleSchema) });
export type WhoAmI = Static<typeof WhoAmI>;

// ------------------------------------------------------------------ dashboard: overview, time series, accounts

export const FleetOverview = Type.Object(
  {
    at: Type.String(),
    workers: Type.Object({ total: Type.Integer(), online: Type.Integer(), offline: Type.Integer(), draining: Type.Integer() }),
    slots: Type.Object({
      vm: Type.Object({ used: Type.Integer(), total: Type.Integer(), schedulable: Type.Integer({ description: 'free slots on online workers that are not drained' }) }),
      macos: Type.Object({ used: Type.Integer(), total: Type.Integer(), schedulable: Type.Integer() }),
    }, { description: 'VM slots of online workers; macOS VMs also take a macOS slot (counted separately)' }),
    vmsByState: Type.Record(Type.String(), Type.Integer()),
    pending: Type.Object({
      count: Type.Integer(),
      oldestName: Type.Union([Type.String(), Type.Null()]),
      oldestWaitSeconds: Type.Union([Type.Number(), Type.Null()]),
      oldestReason: Type.Union([Type.String(), Type.Null()]),
    }),
    recentFailures: Type.Array(EventObject),
  },
  { $id: 'FleetOverview' },
);
export type FleetOverview = Static<typeof FleetOverview>;

export const StatsSample = Type.Object({
  t: Type.Number({ description: 'unix time, seconds' }),
  slotsUsed: Type.Integer(),
  slotsTotal: Type.Integer(),
  macosSlotsUsed: Type.Integer(),
  macosSlotsTotal: Type.Integer(),
  running: Type.Integer(),
  pending: Type.Integer(),
  starts: Type.Integer({ description: 'VMs that reached running during the interval' }),
  failures: Type.Integer({ description: 'VMs that failed during the interval' }),
  schedulingLatencyMs: Type.Union([Type.Number(), Type.Null()], { description: 'mean create-to-placement time of VMs placed during the interval' }),
});
export type StatsSample = Static<typeof StatsSample>;

export const StatsSeries = Type.Object({ intervalSeconds: Type.Number(), samples: Type.Array(StatsSample) }, { $id: 'StatsSeries' });
export type StatsSeries = Static<typeof StatsSeries>;

const Password = Type.String({ minLength: 8, maxLength: 256, description: 'at least 8 characters' });
export const Username = Type.String({
  pattern: NAME_PATTERN,
  minLength: 1,
  maxLength: 40,
  description: 'lower-case letters, digits and dashes; at most 40 characters',
});

export const AccountCreate = Type.Object(
  { username: Username, password: Password, roles: Type.Array(RoleSchema, { minItems: 1, uniqueItems: true }) },
  { additionalProperties: false, $id: 'AccountCreate' },
);
export type AccountCreate = Static<typeof AccountCreate>;

export const AccountObject = Type.Object(
  {
    id: Type.String(),
    username: Type.String(),
    roles: Type.Array(RoleSchema),
    createdBy: Type.String(),
    createdAt: Type.String(),
    lastLoginAt: Type.Union([Type.String(), Type.Null()]),
    disabledAt: Type.Union([Type.String(), Type.Null()]),
  },
  { $id: 'Account' },
);
export type AccountObject = Static<typeof AccountObject>;

export const LoginRequest = Type.Object(
  { username: Type.String({ minLength: 1, maxLength: 64 }), password: Type.String({ minLength: 1, maxLength: 256 }) },
  { additionalProperties: false, $id: 'LoginRequest' },
);
export type LoginRequest = Static<typeof LoginRequest>;

export const LoginResponse = Type.Object({
  token: Type.String({ description: 'an API token (name "login-<username>-<id>") with the account\'s roles; send as "Authorization: Bearer <token>"' }),
  name: Type.String(),
  roles: Type.Array(RoleSchema),
  expiresAt: Type.String(),
});
export type LoginResponse = Static<typeof LoginResponse>;

// ------------------------------------------------------------------ images and registries (issue 15)

export const RegistryHostParam = Type.Object({
  host: Type.String({ minLength: 1, maxLength: 262, description: 'host[:port] as in image references (ghcr.io, 127.0.0.1:5000, [::1]:5000); URL-encode it if your client needs to' }),
});
export type RegistryHostParam = Static<typeof RegistryHostParam>;

export const RegistryPut = Type.Object(
  {
    username: Type.Optional(Type.String({ maxLength: 256, pattern: NO_CONTROL, description: 'omitted: keep the stored one' })),
    password: Type.Optional(
      Type.Union([Type.String({ minLength: 1, maxLength: 4096 }), Type.Null()], { description: 'write-only (never returned); omitted: keep the stored one; null: remove it (anonymous pulls)' }),
    ),
    insecure: Type.Optional(Type.Boolean({ description: 'allow plain HTTP to this registry (default false)' })),
    caPem: Type.Optional(Type.String({ maxLength: 65536, description: 'extra CA certificate(s), PEM, for its TLS certificate (system CAs always apply); "" removes it' })),
    verify: Type.Optional(Type.Boolean({ description: 'check the settings against the registry (GET /v2/) before storing them (default true)' })),
  },
  { additionalProperties: false, $id: 'RegistryPut' },
);
export type RegistryPut = Static<typeof RegistryPut>;

export const RegistryObject = Type.Object(
  {
    host: Type.String(),
    username: Type.String(),
    passwordSet: Type.Boolean({ description: 'whether a password is stored (it is never returned)' }),
    insecure: Type.Boolean(),
    caSet: Type.Boolean({ description: 'whether an extra CA is stored' }),
    createdBy: Type.String(),
    createdAt: Type.String(),
    updatedAt: Type.String(),
  },
  { $id: 'Registry' },
);
export type RegistryObject = Static<typeof RegistryObject>;
export const RegistryList = Type.Object({ items: Type.Array(RegistryObject) });
export type RegistryList = Static<typeof RegistryList>;


const ImageDigest = Type.String({ pattern: '^sha256:[a-f0-9]{64}$', description: 'manifest digest, sha256:<64 hex>' });

export const WorkerImageObject = Type.Object(
  {
    digest: Type.String(),
    reference: Type.String({ description: 'the pinned reference it was pulled as (registry/repository@sha256:…)' }),
    format: Type.String({ description: 'tart | fleet-qemu' }),
    sizeBytes: Type.Number({ description: 'disk use of the unpacked image' }),
    state: Type.String({ description: 'ready | pulling | failed' }),
    progress: Type.Union([TransferProgressObject, Type.Null()], { description: 'while pulling' }),
    error: Type.String(),
    inUse: Type.Integer({ description: 'VM instances on the worker whose disks depend on it' }),
    lastUsedAt: Type.Union([Type.String(), Type.Null()]),
  },
  { $id: 'WorkerImage' },
);
export type WorkerImageObject = Static<typeof WorkerImageObject>;

export const WorkerImageList = Type.Object({
  worker: Type.String(),
  usedBytes: Type.Number({ description: "bytes the worker's image cache uses" }),
  limitBytes: Type.Number({ description: 'the cache limit above which least-recently-used images are collected; 0 = none' }),
  items: Type.Array(WorkerImageObject),
});
export type WorkerImageList = Static<typeof WorkerImageList>;

export const ImageSummaryObject = Type.Object(
  {
    digest: Type.String(),
    reference: Type.String(),
    format: Type.String(),
    sizeBytes: Type.Number(),
    workers: Type.Array(
      Type.Object({
        name: Type.String(),
        state: Type.String(),
        inUse: Type.Integer(),
        lastUsedAt: Type.Union([Type.String(), Type.Null()]),
        progress: Type.Union([TransferProgressObject, Type.Null()]),
      }),
    ),
  },
  { $id: 'ImageSummary' },
);
export const ImageSummaryList = Type.Object({ items: Type.Array(ImageSummaryObject) });
export type ImageSummaryObject = Static<typeof ImageSummaryObject>;
export type ImageSummaryList = Static<typeof ImageSummaryList>;

export const ImageOperationStateSchema = Type.Union(['pending', 'running', 'succeeded', 'failed'].map((s) => Type.Literal(s)));

export const ImageOperationObject = Type.Object(
  {
    id: Type.String(),
    kind: Type.String({ description: 'prefetch | delete | push' }),
    worker: Type.String({ description: 'the worker that carries it out' }),
    vm: Type.Union([Type.String(), Type.Null()], { description: 'push: the VM whose disk is pushed' }),
    reference: Type.String({ description: 'prefetch: the pinned reference; push: the target registry/repository:tag; delete: the image deleted' }),
    digest: Type.String({ description: 'the image digest (push: known once pushed)' }),
    state: Type.String({ description: 'pending | running | succeeded | failed' }),
    message: Type.String({ description: 'what happened, or why it failed' }),
    progress: Type.Union([TransferProgressObject, Type.Null()]),
    createdBy: Type.String(),
    createdAt: Type.String(),
    updatedAt: Type.String(),
  },
  { $id: 'ImageOperation' },
);
export type ImageOperationObject = Static<typeof ImageOperationObject>;
export const ImageOperationList = Type.Object({ items: Type.Array(ImageOperationObject) });
export type ImageOperationList = Static<typeof ImageOperationList>;

export const ImageOperationQuery = Type.Object(
  {
    worker: Type.Optional(Name),
    state: Type.Optional(ImageOperationStateSchema),
  },
  { additionalProperties: false },
);

export const ImagePrefetchRequest = Type.Object(
  {
    reference: Type.String({ minLength: 1, maxLength: 1024, pattern: NO_CONTROL, description: 'registry/repository[:tag] or …@sha256:…' }),
    selector: Type.Optional(Labels),
  },
  { additionalProperties: false, $id: 'ImagePrefetchRequest' },
);
export type ImagePrefetchRequest = Static<typeof ImagePrefetchRequest>;

export const ImagePrefetchResult = Type.Object({
  reference: Type.String(),
  digest: Type.String(),
  format: Type.String({ description: 'tart (vz workers) | fleet-qemu (qemu workers)' }),
  operations: Type.Array(ImageOperationObject, { description: 'one per eligible worker (a prefetch of the same image still under way there is reused)' }),
});
export type ImagePrefetchResult = Static<typeof ImagePrefetchResult>;

export const VmPushRequest = Type.Object(
  { reference: Type.String({ minLength: 1, maxLength: 1024, pattern: NO_CONTROL, description: 'registry/repository:tag to push to' }) },
  { additionalProperties: false, $id: 'VmPushRequest' },
);
export type VmPushRequest = Static<typeof VmPushRequest>;

export const WorkerImageParams = Type.Object({ name: Name, digest: ImageDigest });
export const ImageOperationIdParam = Type.Object({ id: Type.String({ minLength: 1, maxLength: 128 }) });
