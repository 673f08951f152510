-- AlterTable
ALTER TABLE "Worker" ADD COLUMN     "controllerId" TEXT;

-- CreateTable
CREATE TABLE "Controller" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "apiUrl" TEXT NOT NULL,
    "grpcAddress" TEXT NOT NULL,
    "version" TEXT NOT NULL DEFAULT '',
    "role" TEXT NOT NULL DEFAULT 'follower',
    "connectedWorkers" INTEGER NOT NULL DEFAULT 0,
    "startedAt" TIMESTAMP(3) NOT NULL,
    "lastSeenAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "Controller_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "ControllerLease" (
    "id" TEXT NOT NULL,
    "holderId" TEXT NOT NULL,
    "holderName" TEXT NOT NULL,
    "token" INTEGER NOT NULL,
    "expiresAt" TIMESTAMP(3) NOT NULL,
    "backendPid" INTEGER NOT NULL DEFAULT 0,
    "acquiredAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "ControllerLease_pkey" PRIMARY KEY ("id")
);
