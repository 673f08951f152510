-- RedefineTables
PRAGMA defer_foreign_keys=ON;
PRAGMA foreign_keys=OFF;
CREATE TABLE "new_VmAccess" (
    "vmId" TEXT NOT NULL PRIMARY KEY,
    "username" TEXT NOT NULL DEFAULT 'fleet',
    "publicKey" TEXT NOT NULL,
    "privateKey" TEXT NOT NULL DEFAULT '',
    "privateKeySealed" TEXT,
    "password" TEXT,
    "passwordSealed" TEXT,
    "hostKey" TEXT,
    "hostKeyAttempt" INTEGER,
    "hostKeyBootAt" DATETIME,
    "hostKeySeenAt" DATETIME,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
INSERT INTO "new_VmAccess" ("createdAt", "hostKey", "hostKeyAttempt", "hostKeyBootAt", "hostKeySeenAt", "password", "privateKey", "publicKey", "username", "vmId") SELECT "createdAt", "hostKey", "hostKeyAttempt", "hostKeyBootAt", "hostKeySeenAt", "password", "privateKey", "publicKey", "username", "vmId" FROM "VmAccess";
DROP TABLE "VmAccess";
ALTER TABLE "new_VmAccess" RENAME TO "VmAccess";
PRAGMA foreign_keys=ON;
PRAGMA defer_foreign_keys=OFF;
