-- AlterTable
ALTER TABLE "Worker" ADD COLUMN "controllerId" TEXT;

-- CreateTable
CREATE TABLE "Controller" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "name" TEXT NOT NULL,
    "apiUrl" TEXT NOT NULL,
    "grpcAddress" TEXT NOT NULL,
    "version" TEXT NOT NULL DEFAULT '',
    "role" TEXT NOT NULL DEFAULT 'follower',
    "connectedWorkers" INTEGER NOT NULL DEFAULT 0,
    "startedAt" DATETIME NOT NULL,
    "lastSeenAt" DATETIME NOT NULL
);

-- CreateTable
CREATE TABLE "ControllerLease" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "holderId" TEXT NOT NULL,
    "holderName" TEXT NOT NULL,
    "token" INTEGER NOT NULL,
    "expiresAt" DATETIME NOT NULL,
    "backendPid" INTEGER NOT NULL DEFAULT 0,
    "acquiredAt" DATETIME NOT NULL
);
