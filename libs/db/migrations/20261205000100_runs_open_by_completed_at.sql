-- A run is open (queued or in progress) exactly while completed_at is NULL: every terminal transition
-- (the stamp, cancelling a queued run) sets it, and no run leaves a terminal status. The partial indexes
-- of open runs now say so with completed_at instead of status, so that claiming a run (queued →
-- in_progress, attempt + 1) touches no indexed column and Postgres can update it in place (a HOT update:
-- no new entry in any of the table's six indexes, less WAL). Only the stamp, which takes the run out of
-- the open indexes, still writes index entries.
--
-- Locks, in this order because the migration is one transaction and keeps each lock until it commits:
-- building the indexes reads the table once each under a SHARE lock (writes wait, reads go on); the
-- statements that need an exclusive lock come last and take it only for the moment before the commit.
CREATE INDEX runs_unfinished_by_conversation ON runs (conversation_id, conversation_seq) WHERE completed_at IS NULL;
CREATE INDEX runs_unfinished_by_age ON runs (created_at) WHERE completed_at IS NULL;
DROP INDEX runs_open_by_conversation;
DROP INDEX runs_open_by_age;

-- NOT VALID: enforced for every row written from now on, without reading the table again; every existing
-- row already satisfies it (the code has always set both together).
ALTER TABLE runs ADD CONSTRAINT runs_open_until_completed
  CHECK ((status IN ('queued', 'in_progress')) = (completed_at IS NULL)) NOT VALID;

-- Room on each page for the claim's new row version, which a HOT update must place beside the old one.
ALTER TABLE runs SET (fillfactor = 85);
