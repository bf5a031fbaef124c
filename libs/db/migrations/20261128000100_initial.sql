-- Tenants own smiths; smiths own conversations; conversations are threads of runs; items are the
-- runs' inputs and outputs, each stored once.

CREATE TABLE tenants (
  id          text PRIMARY KEY,
  name        text NOT NULL,
  created_at  timestamptz(3) NOT NULL DEFAULT now()
);

CREATE TABLE smiths (
  id             text PRIMARY KEY,
  tenant_id      text NOT NULL REFERENCES tenants (id),
  name           text NOT NULL,
  default_model  text NOT NULL,
  created_at     timestamptz(3) NOT NULL DEFAULT now()
);
CREATE INDEX smiths_by_tenant ON smiths (tenant_id, id);

-- Only a SHA-256 of the secret is kept; the token is shown once when minted.
CREATE TABLE api_tokens (
  id           text PRIMARY KEY,
  tenant_id    text NOT NULL REFERENCES tenants (id),
  smith_id     text REFERENCES smiths (id),
  kind         text NOT NULL CHECK (kind IN ('smith', 'tenant_admin')),
  scopes       text[] NOT NULL,
  secret_hash  bytea NOT NULL UNIQUE,
  label        text,
  created_at   timestamptz(3) NOT NULL DEFAULT now(),
  expires_at   timestamptz(3),
  revoked_at   timestamptz(3),
  CHECK ((kind = 'smith') = (smith_id IS NOT NULL))
);

-- Deleting a conversation sets deleted_at: the handle disappears, its runs and items stay.
-- last_run_seq orders turns; item_count hands out item positions when a run is stamped.
CREATE TABLE conversations (
  id            text PRIMARY KEY,
  tenant_id     text NOT NULL REFERENCES tenants (id),
  smith_id      text NOT NULL REFERENCES smiths (id),
  title         text,
  title_source  text CHECK (title_source IN ('user', 'auto')),
  metadata      jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at    timestamptz(3) NOT NULL DEFAULT now(),
  updated_at    timestamptz(3) NOT NULL DEFAULT now(),
  deleted_at    timestamptz(3),
  last_run_seq  integer NOT NULL DEFAULT 0,
  item_count    bigint NOT NULL DEFAULT 0
);
-- Keyset pagination for the conversation list, one index per sort order.
CREATE INDEX conversations_by_created ON conversations (smith_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX conversations_by_updated ON conversations (smith_id, updated_at DESC, id DESC) WHERE deleted_at IS NULL;

CREATE TABLE runs (
  id                    text PRIMARY KEY,
  tenant_id             text NOT NULL REFERENCES tenants (id),
  smith_id              text NOT NULL REFERENCES smiths (id),
  conversation_id       text REFERENCES conversations (id),
  conversation_seq      integer,
  previous_response_id  text REFERENCES runs (id),
  status                text NOT NULL CHECK (status IN ('queued', 'in_progress', 'completed', 'incomplete', 'failed', 'cancelled')),
  model                 text NOT NULL,
  instructions          text,
  params                jsonb NOT NULL,
  input_count           integer NOT NULL,
  output_count          integer NOT NULL DEFAULT 0,
  usage                 jsonb,
  error                 jsonb,
  incomplete_details    jsonb,
  attempt               integer NOT NULL DEFAULT 0,
  idempotency_key       text,
  request_hash          text NOT NULL,
  created_at            timestamptz(3) NOT NULL DEFAULT now(),
  started_at            timestamptz(3),
  completed_at          timestamptz(3),
  cancel_requested_at   timestamptz(3),
  deleted_at            timestamptz(3),
  UNIQUE (conversation_id, conversation_seq),
  UNIQUE (smith_id, idempotency_key),
  CHECK ((conversation_id IS NULL) = (conversation_seq IS NULL))
);
-- The next run of a conversation, and the sweeper's view of unfinished work.
CREATE INDEX runs_open_by_conversation ON runs (conversation_id, conversation_seq) WHERE status IN ('queued', 'in_progress');
CREATE INDEX runs_open_by_age ON runs (created_at) WHERE status IN ('queued', 'in_progress');
-- Recognises an SDK retry (same smith, same body, moments apart) that carries no Idempotency-Key.
CREATE INDEX runs_by_request_hash ON runs (smith_id, request_hash, created_at DESC);

-- Items are written with their run (input at acceptance, output at stamping) and join the
-- conversation's transcript, with a position, only when the run completes.
CREATE TABLE items (
  id               text PRIMARY KEY,
  run_id           text NOT NULL REFERENCES runs (id),
  direction        text NOT NULL CHECK (direction IN ('input', 'output')),
  ordinal          integer NOT NULL,
  conversation_id  text REFERENCES conversations (id),
  position         bigint,
  body             jsonb NOT NULL,
  created_at       timestamptz(3) NOT NULL DEFAULT now(),
  UNIQUE (run_id, ordinal),
  UNIQUE (conversation_id, position),
  CHECK ((conversation_id IS NULL) = (position IS NULL))
);
