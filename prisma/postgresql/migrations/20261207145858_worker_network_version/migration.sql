-- AlterTable
ALTER TABLE "Worker" ADD COLUMN     "networkVersion" INTEGER NOT NULL DEFAULT 0;
