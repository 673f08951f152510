-- AlterTable
ALTER TABLE "Allocation" ADD COLUMN     "mac" TEXT NOT NULL DEFAULT '',
ADD COLUMN     "networkMode" TEXT NOT NULL DEFAULT 'nat';

-- AlterTable
ALTER TABLE "Vm" ADD COLUMN     "customMac" TEXT NOT NULL DEFAULT '',
ADD COLUMN     "networkMode" TEXT NOT NULL DEFAULT 'nat';

-- AlterTable
ALTER TABLE "Worker" ADD COLUMN     "networks" TEXT NOT NULL DEFAULT '[]';
