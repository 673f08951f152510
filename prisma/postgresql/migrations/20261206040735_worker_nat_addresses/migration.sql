-- AlterTable
ALTER TABLE "Worker" ADD COLUMN     "natAddresses" INTEGER NOT NULL DEFAULT 0;
