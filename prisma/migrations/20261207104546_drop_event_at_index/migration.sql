-- DropIndex
DROP INDEX "Event_at_idx";
