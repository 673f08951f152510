-- CreateTable
CREATE TABLE "VmAccess" (
    "vmId" TEXT NOT NULL,
    "username" TEXT NOT NULL DEFAULT 'fleet',
    "publicKey" TEXT NOT NULL,
    "privateKey" TEXT NOT NULL,
    "password" TEXT,
    "hostKey" TEXT,
    "hostKeyAttempt" INTEGER,
    "hostKeyBootAt" TIMESTAMP(3),
    "hostKeySeenAt" TIMESTAMP(3),
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "VmAccess_pkey" PRIMARY KEY ("vmId")
);
