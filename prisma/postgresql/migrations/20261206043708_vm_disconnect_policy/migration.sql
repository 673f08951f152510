-- AlterTable
ALTER TABLE "Vm" ADD COLUMN     "disconnectPolicy" TEXT NOT NULL DEFAULT 'reschedule';
