-- AlterTable
ALTER TABLE "VmAccess" ADD COLUMN     "passwordSealed" TEXT,
ADD COLUMN     "privateKeySealed" TEXT,
ALTER COLUMN "privateKey" SET DEFAULT '';
