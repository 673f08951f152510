-- CreateTable
CREATE TABLE "VmAccess" (
    "vmId" TEXT NOT NULL PRIMARY KEY,
    "username" TEXT NOT NULL DEFAULT 'fleet',
    "publicKey" TEXT NOT NULL,
    "privateKey" TEXT NOT NULL,
    "password" TEXT,
    "hostKey" TEXT,
    "hostKeyAttempt" INTEGER,
    "hostKeyBootAt" DATETIME,
    "hostKeySeenAt" DATETIME,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
