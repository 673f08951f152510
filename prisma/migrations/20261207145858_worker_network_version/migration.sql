-- RedefineTables
PRAGMA defer_foreign_keys=ON;
PRAGMA foreign_keys=OFF;
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
    "networkVersion" INTEGER NOT NULL DEFAULT 0,
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
INSERT INTO "new_Worker" ("arch", "connected", "controllerId", "cpus", "createdAt", "drivers", "hostname", "id", "imageCacheBytes", "imageCacheLimit", "labels", "lastSeenAt", "machineId", "macosSlots", "memoryMib", "name", "natAddresses", "networks", "os", "paused", "protocolVersion", "status", "updatedAt", "version", "vmSlots") SELECT "arch", "connected", "controllerId", "cpus", "createdAt", "drivers", "hostname", "id", "imageCacheBytes", "imageCacheLimit", "labels", "lastSeenAt", "machineId", "macosSlots", "memoryMib", "name", "natAddresses", "networks", "os", "paused", "protocolVersion", "status", "updatedAt", "version", "vmSlots" FROM "Worker";
DROP TABLE "Worker";
ALTER TABLE "new_Worker" RENAME TO "Worker";
CREATE UNIQUE INDEX "Worker_name_key" ON "Worker"("name");
PRAGMA foreign_keys=ON;
PRAGMA defer_foreign_keys=OFF;
