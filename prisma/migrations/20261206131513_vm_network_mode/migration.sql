-- RedefineTables
PRAGMA defer_foreign_keys=ON;
PRAGMA foreign_keys=OFF;
CREATE TABLE "new_Allocation" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "vmId" TEXT NOT NULL,
    "attempt" INTEGER NOT NULL,
    "workerId" TEXT NOT NULL,
    "cpus" INTEGER NOT NULL,
    "memoryMib" INTEGER NOT NULL,
    "macos" BOOLEAN NOT NULL DEFAULT false,
    "networkMode" TEXT NOT NULL DEFAULT 'nat',
    "mac" TEXT NOT NULL DEFAULT '',
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "deliveredAt" DATETIME,
    CONSTRAINT "Allocation_workerId_fkey" FOREIGN KEY ("workerId") REFERENCES "Worker" ("id") ON DELETE CASCADE ON UPDATE CASCADE
);
INSERT INTO "new_Allocation" ("attempt", "cpus", "createdAt", "deliveredAt", "id", "macos", "memoryMib", "vmId", "workerId") SELECT "attempt", "cpus", "createdAt", "deliveredAt", "id", "macos", "memoryMib", "vmId", "workerId" FROM "Allocation";
DROP TABLE "Allocation";
ALTER TABLE "new_Allocation" RENAME TO "Allocation";
CREATE INDEX "Allocation_workerId_idx" ON "Allocation"("workerId");
CREATE UNIQUE INDEX "Allocation_vmId_attempt_key" ON "Allocation"("vmId", "attempt");
CREATE TABLE "new_Vm" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "name" TEXT NOT NULL,
    "state" TEXT NOT NULL,
    "reason" TEXT NOT NULL DEFAULT '',
    "image" TEXT NOT NULL,
    "imageDigest" TEXT NOT NULL DEFAULT '',
    "pullProgress" TEXT NOT NULL DEFAULT '',
    "os" TEXT NOT NULL DEFAULT 'linux',
    "driver" TEXT NOT NULL DEFAULT '',
    "cpus" INTEGER NOT NULL,
    "memoryMib" INTEGER NOT NULL,
    "diskGib" INTEGER NOT NULL DEFAULT 20,
    "username" TEXT NOT NULL DEFAULT '',
    "labels" TEXT NOT NULL DEFAULT '{}',
    "selector" TEXT NOT NULL DEFAULT '{}',
    "network" TEXT NOT NULL DEFAULT '{}',
    "networkMode" TEXT NOT NULL DEFAULT 'nat',
    "customMac" TEXT NOT NULL DEFAULT '',
    "priority" INTEGER NOT NULL DEFAULT 0,
    "restartPolicy" TEXT NOT NULL DEFAULT 'never',
    "disconnectPolicy" TEXT NOT NULL DEFAULT 'reschedule',
    "restartCount" INTEGER NOT NULL DEFAULT 0,
    "restartAt" DATETIME,
    "attempt" INTEGER NOT NULL DEFAULT 0,
    "generation" INTEGER NOT NULL DEFAULT 1,
    "observedGeneration" INTEGER NOT NULL DEFAULT 0,
    "desiredPower" TEXT NOT NULL DEFAULT 'running',
    "workerId" TEXT,
    "ip" TEXT,
    "mac" TEXT,
    "createdBy" TEXT NOT NULL DEFAULT '',
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL,
    "scheduledAt" DATETIME,
    "runningAt" DATETIME,
    "deleteRequestedAt" DATETIME,
    CONSTRAINT "Vm_workerId_fkey" FOREIGN KEY ("workerId") REFERENCES "Worker" ("id") ON DELETE SET NULL ON UPDATE CASCADE
);
INSERT INTO "new_Vm" ("attempt", "cpus", "createdAt", "createdBy", "deleteRequestedAt", "desiredPower", "disconnectPolicy", "diskGib", "driver", "generation", "id", "image", "imageDigest", "ip", "labels", "mac", "memoryMib", "name", "network", "observedGeneration", "os", "priority", "pullProgress", "reason", "restartAt", "restartCount", "restartPolicy", "runningAt", "scheduledAt", "selector", "state", "updatedAt", "username", "workerId") SELECT "attempt", "cpus", "createdAt", "createdBy", "deleteRequestedAt", "desiredPower", "disconnectPolicy", "diskGib", "driver", "generation", "id", "image", "imageDigest", "ip", "labels", "mac", "memoryMib", "name", "network", "observedGeneration", "os", "priority", "pullProgress", "reason", "restartAt", "restartCount", "restartPolicy", "runningAt", "scheduledAt", "selector", "state", "updatedAt", "username", "workerId" FROM "Vm";
DROP TABLE "Vm";
ALTER TABLE "new_Vm" RENAME TO "Vm";
CREATE UNIQUE INDEX "Vm_name_key" ON "Vm"("name");
CREATE INDEX "Vm_state_priority_createdAt_idx" ON "Vm"("state", "priority", "createdAt");
CREATE INDEX "Vm_workerId_idx" ON "Vm"("workerId");
CREATE TABLE "new_Worker" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "name" TEXT NOT NULL,
    "machineId" TEXT NOT NULL,
    "hostname" TEXT NOT NULL DEFAULT '',
    "os" TEXT NOT NULL DEFAULT '',
    "arch" TEXT NOT NULL DEFAULT '',
    "version" TEXT NOT NULL DEFAULT '',
    "protocolVersion" INTEGER NOT NULL DEFAULT 0,
    "labels" TEXT NOT NULL DEFAULT '{}',
    "drivers" TEXT NOT NULL DEFAULT '[]',
    "cpus" INTEGER NOT NULL DEFAULT 0,
    "memoryMib" INTEGER NOT NULL DEFAULT 0,
    "vmSlots" INTEGER NOT NULL DEFAULT 0,
    "macosSlots" INTEGER NOT NULL DEFAULT 0,
    "natAddresses" INTEGER NOT NULL DEFAULT 0,
    "networks" TEXT NOT NULL DEFAULT '[]',
    "paused" BOOLEAN NOT NULL DEFAULT false,
    "connected" BOOLEAN NOT NULL DEFAULT false,
    "controllerId" TEXT,
    "status" TEXT NOT NULL DEFAULT 'offline',
    "lastSeenAt" DATETIME,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL,
    "imageCacheBytes" BIGINT NOT NULL DEFAULT 0,
    "imageCacheLimit" BIGINT NOT NULL DEFAULT 0
);
INSERT INTO "new_Worker" ("arch", "connected", "controllerId", "cpus", "createdAt", "drivers", "hostname", "id", "imageCacheBytes", "imageCacheLimit", "labels", "lastSeenAt", "machineId", "macosSlots", "memoryMib", "name", "natAddresses", "os", "paused", "protocolVersion", "status", "updatedAt", "version", "vmSlots") SELECT "arch", "connected", "controllerId", "cpus", "createdAt", "drivers", "hostname", "id", "imageCacheBytes", "imageCacheLimit", "labels", "lastSeenAt", "machineId", "macosSlots", "memoryMib", "name", "natAddresses", "os", "paused", "protocolVersion", "status", "updatedAt", "version", "vmSlots" FROM "Worker";
DROP TABLE "Worker";
ALTER TABLE "new_Worker" RENAME TO "Worker";
CREATE UNIQUE INDEX "Worker_name_key" ON "Worker"("name");
PRAGMA foreign_keys=ON;
PRAGMA defer_foreign_keys=OFF;
