-- RedefineTables
PRAGMA defer_foreign_keys=ON;
PRAGMA foreign_keys=OFF;
CREATE TABLE "new_Vm" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "name" TEXT NOT NULL,
    "state" TEXT NOT NULL,
    "reason" TEXT NOT NULL DEFAULT '',
    "image" TEXT NOT NULL,
    "os" TEXT NOT NULL DEFAULT 'linux',
    "driver" TEXT NOT NULL DEFAULT '',
    "cpus" INTEGER NOT NULL,
    "memoryMib" INTEGER NOT NULL,
    "diskGib" INTEGER NOT NULL DEFAULT 20,
    "username" TEXT NOT NULL DEFAULT '',
    "labels" TEXT NOT NULL DEFAULT '{}',
    "selector" TEXT NOT NULL DEFAULT '{}',
    "network" TEXT NOT NULL DEFAULT '{}',
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
INSERT INTO "new_Vm" ("attempt", "cpus", "createdAt", "createdBy", "deleteRequestedAt", "desiredPower", "diskGib", "driver", "generation", "id", "image", "ip", "labels", "mac", "memoryMib", "name", "network", "observedGeneration", "os", "priority", "reason", "restartAt", "restartCount", "restartPolicy", "runningAt", "scheduledAt", "selector", "state", "updatedAt", "username", "workerId") SELECT "attempt", "cpus", "createdAt", "createdBy", "deleteRequestedAt", "desiredPower", "diskGib", "driver", "generation", "id", "image", "ip", "labels", "mac", "memoryMib", "name", "network", "observedGeneration", "os", "priority", "reason", "restartAt", "restartCount", "restartPolicy", "runningAt", "scheduledAt", "selector", "state", "updatedAt", "username", "workerId" FROM "Vm";
DROP TABLE "Vm";
ALTER TABLE "new_Vm" RENAME TO "Vm";
CREATE UNIQUE INDEX "Vm_name_key" ON "Vm"("name");
CREATE INDEX "Vm_state_priority_createdAt_idx" ON "Vm"("state", "priority", "createdAt");
CREATE INDEX "Vm_workerId_idx" ON "Vm"("workerId");
PRAGMA foreign_keys=ON;
PRAGMA defer_foreign_keys=OFF;
