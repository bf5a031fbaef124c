-- Lets GET /v1/conversations filter by metadata (metadata @> filter) without scanning a smith's whole list.
CREATE INDEX conversations_metadata ON conversations USING gin (metadata jsonb_path_ops) WHERE deleted_at IS NULL;
