import { z } from 'zod';
import { StoredItemBody } from './items';
import { RunError, RunParams, RunStatus, Usage } from './responses';

/** Row schemas for slonik's `sql.type`. Timestamps arrive as epoch milliseconds (slonik's parser preset). */
const Millis = z.number();

export const TenantRow = z.object({ id: z.string(), name: z.string(), created_at: Millis }).strict();
export type TenantRow = z.infer<typeof TenantRow>;

export const SmithRow = z
  .object({ id: z.string(), tenant_id: z.string(), name: z.string(), default_model: z.string(), created_at: Millis })
  .strict();
export type SmithRow = z.infer<typeof SmithRow>;

export const TokenKind = z.enum(['smith', 'tenant_admin']);
export type TokenKind = z.infer<typeof TokenKind>;

export const ApiTokenRow = z
  .object({
    id: z.string(),
    tenant_id: z.string(),
    smith_id: z.string().nullable(),
    kind: TokenKind,
    scopes: z.array(z.string()),
    label: z.string().nullable(),
    created_at: Millis,
    expires_at: Millis.nullable(),
    revoked_at: Millis.nullable(),
  })
  .strict();
export type ApiTokenRow = z.infer<typeof ApiTokenRow>;

export const ConversationRow = z
  .object({
    id: z.string(),
    tenant_id: z.string(),
    smith_id: z.string(),
    title: z.string().nullable(),
    title_source: z.enum(['user', 'auto']).nullable(),
    metadata: z.record(z.string()),
    created_at: Millis,
    updated_at: Millis,
  })
  .strict();
export type ConversationRow = z.infer<typeof ConversationRow>;

export const RunRow = z
  .object({
    id: z.string(),
    tenant_id: z.string(),
    smith_id: z.string(),
    conversation_id: z.string().nullable(),
    conversation_seq: z.number().nullable(),
    previous_response_id: z.string().nullable(),
    status: RunStatus,
    model: z.string(),
    instructions: z.string().nullable(),
    params: RunParams,
    input_count: z.number(),
    output_count: z.number(),
    usage: Usage.nullable(),
    error: RunError.nullable(),
    incomplete_details: z.object({ reason: z.string() }).nullable(),
    attempt: z.number(),
    idempotency_key: z.string().nullable(),
    request_hash: z.string(),
    created_at: Millis,
    started_at: Millis.nullable(),
    completed_at: Millis.nullable(),
    cancel_requested_at: Millis.nullable(),
  })
  .strict();
export type RunRow = z.infer<typeof RunRow>;

export const ItemRow = z
  .object({
    id: z.string(),
    run_id: z.string(),
    direction: z.enum(['input', 'output']),
    ordinal: z.number(),
    conversation_id: z.string().nullable(),
    position: z.number().nullable(),
    body: StoredItemBody,
  })
  .strict();
export type ItemRow = z.infer<typeof ItemRow>;
