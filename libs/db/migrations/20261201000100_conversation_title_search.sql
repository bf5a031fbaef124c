-- Lets GET /v1/conversations?q=… find titles by case-insensitive substring (lower(title) LIKE '%…%')
-- without reading a smith's whole list: a trigram GIN index, with smith_id in the same index (btree_gin)
-- so one smith's matches come straight out of it. Both extensions are "trusted" (PostgreSQL 13+): a role
-- with CREATE on the database may install them, superuser not needed.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gin;

CREATE INDEX conversations_title_search ON conversations USING gin (smith_id, lower(title) gin_trgm_ops)
  WHERE deleted_at IS NULL;

-- The expression index makes ANALYZE keep statistics on lower(title), so the planner can estimate how
-- rare a searched word is and choose between this index and walking the sort-order index.
ANALYZE conversations;
