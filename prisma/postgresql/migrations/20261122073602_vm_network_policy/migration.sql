-- AlterTable
ALTER TABLE "Vm" ADD COLUMN     "network" TEXT NOT NULL DEFAULT '{}';
