-- AlterTable
ALTER TABLE "Allocation" ADD COLUMN "deliveredAt" DATETIME;

-- Allocations that existed before this column may have been sent already: count them as delivered.
UPDATE "Allocation" SET "deliveredAt" = "createdAt";
