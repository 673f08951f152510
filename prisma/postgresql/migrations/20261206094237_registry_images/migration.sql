-- AlterTable
ALTER TABLE "Vm" ADD COLUMN     "imageDigest" TEXT NOT NULL DEFAULT '',
ADD COLUMN     "pullProgress" TEXT NOT NULL DEFAULT '';

-- AlterTable
ALTER TABLE "Worker" ADD COLUMN     "imageCacheBytes" BIGINT NOT NULL DEFAULT 0,
ADD COLUMN     "imageCacheLimit" BIGINT NOT NULL DEFAULT 0;

-- CreateTable
CREATE TABLE "Registry" (
    "host" TEXT NOT NULL,
    "username" TEXT NOT NULL DEFAULT '',
    "passwordSealed" TEXT,
    "insecure" BOOLEAN NOT NULL DEFAULT false,
    "caPem" TEXT NOT NULL DEFAULT '',
    "createdBy" TEXT NOT NULL DEFAULT '',
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "Registry_pkey" PRIMARY KEY ("host")
);

-- CreateTable
CREATE TABLE "WorkerImage" (
    "workerId" TEXT NOT NULL,
    "digest" TEXT NOT NULL,
    "reference" TEXT NOT NULL DEFAULT '',
    "format" TEXT NOT NULL DEFAULT '',
    "sizeBytes" BIGINT NOT NULL DEFAULT 0,
    "state" TEXT NOT NULL DEFAULT 'ready',
    "bytesDone" BIGINT NOT NULL DEFAULT 0,
    "bytesTotal" BIGINT NOT NULL DEFAULT 0,
    "error" TEXT NOT NULL DEFAULT '',
    "inUse" INTEGER NOT NULL DEFAULT 0,
    "lastUsedAt" TIMESTAMP(3),
    "updatedAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "WorkerImage_pkey" PRIMARY KEY ("workerId","digest")
);

-- CreateTable
CREATE TABLE "ImageOperation" (
    "id" TEXT NOT NULL,
    "kind" TEXT NOT NULL,
    "workerId" TEXT NOT NULL,
    "reference" TEXT NOT NULL DEFAULT '',
    "digest" TEXT NOT NULL DEFAULT '',
    "vmId" TEXT,
    "state" TEXT NOT NULL DEFAULT 'pending',
    "message" TEXT NOT NULL DEFAULT '',
    "bytesDone" BIGINT NOT NULL DEFAULT 0,
    "bytesTotal" BIGINT NOT NULL DEFAULT 0,
    "createdBy" TEXT NOT NULL DEFAULT '',
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "ImageOperation_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "WorkerImage_digest_idx" ON "WorkerImage"("digest");

-- CreateIndex
CREATE INDEX "ImageOperation_workerId_state_idx" ON "ImageOperation"("workerId", "state");

-- CreateIndex
CREATE INDEX "ImageOperation_createdAt_idx" ON "ImageOperation"("createdAt");

-- AddForeignKey
ALTER TABLE "WorkerImage" ADD CONSTRAINT "WorkerImage_workerId_fkey" FOREIGN KEY ("workerId") REFERENCES "Worker"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "ImageOperation" ADD CONSTRAINT "ImageOperation_workerId_fkey" FOREIGN KEY ("workerId") REFERENCES "Worker"("id") ON DELETE CASCADE ON UPDATE CASCADE;
