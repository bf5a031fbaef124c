import type { ConversationObject } from './api';
import type { ConversationRow, ItemRow } from './rows';

/** Unix seconds, as every OpenAI object uses. */
export const toUnixSeconds = (millis: number): number => Math.floor(millis / 1000);

export function presentConversation(row: ConversationRow): ConversationObject {
  return {
    id: row.id,
    object: 'conversation',
    created_at: toUnixSeconds(row.created_at),
    updated_at: toUnixSeconds(row.updated_at),
    title: row.title,
    smith_id: row.smith_id,
    metadata: row.metadata,
  };
}

/** An item as the API shows it: its derived id first, then the stored body. */
export function presentItem(row: Pick<ItemRow, 'id' | 'body'>): Record<string, unknown> & { id: string; type: string } {
  // id and type lead, as in OpenAI's objects (jsonb would otherwise return keys shortest-first).
  const { type, ...rest } = row.body;
  return { id: row.id, type, ...rest };
}

/** OpenAI's list envelope; the client paginates on `last_id` (conversation items) or the last `id` (input items). */
export function toItemList<T extends { id: string }>(data: T[], hasMore: boolean): { object: 'list'; data: T[]; first_id: string | null; last_id: string | null; has_more: boolean } {
  return { object: 'list', data, first_id: data[0]?.id ?? null, last_id: data[data.length - 1]?.id ?? null, has_more: hasMore };
}
