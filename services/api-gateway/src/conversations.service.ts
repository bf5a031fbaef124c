import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { CursorCodec } from '@ic/cursors';
import { createConversationsRepo, createItemsRepo, type DatabasePool } from '@ic/db';
import {
  apiError,
  ConversationId,
  METADATA_MAX_PAIRS,
  newId,
  presentConversation,
  presentItem,
  toItemList,
  type ConversationObject,
  type CreateConversationBody,
  type CursorList,
  type ItemList,
  type ListConversationsQuery,
  type ListItemsQuery,
  type SmithRow,
  type UpdateConversationBody,
} from '@ic/schemas';

const ConversationCursor = z.object({
  at: z.number(),
  id: ConversationId,
  sort: z.enum(['created_at', 'updated_at']),
  order: z.enum(['asc', 'desc']),
  /** The metadata filter the listing used, so a cursor cannot be replayed against another filter. */
  filter: z.string(),
  /** Digest of the title search the listing used (absent: no search, as in cursors minted before search existed). */
  q: z.string().optional(),
});

/** A digest, not q itself: a 200-character q spelled in JSON escapes would not fit the 1024-character cursor. */
const searchKey = (q: string | undefined) => (q ? createHash('sha256').update(q).digest('base64url').slice(0, 22) : undefined);

const filterKey = (metadata: Record<string, string> | undefined) =>
  JSON.stringify(Object.entries(metadata ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));

type Item = ReturnType<typeof presentItem>;

/** Conversation CRUD and the transcript read path. Transactions live here; SQL lives in the repositories. */
export class ConversationsService {
  constructor(
    private readonly pool: DatabasePool,
    private readonly cursors: CursorCodec,
  ) {}

  async create(smith: SmithRow, body: z.infer<typeof CreateConversationBody>): Promise<ConversationObject> {
    const row = await createConversationsRepo(this.pool).insert({
      id: newId('conversation'),
      tenantId: smith.tenant_id,
      smithId: smith.id,
      title: body.title ?? null,
      metadata: body.metadata ?? {},
    });
    return presentConversation(row);
  }

  async list(smith: SmithRow, query: z.infer<typeof ListConversationsQuery>): Promise<CursorList<ConversationObject>> {
    const after = query.cursor ? this.cursors.decode('conversations', query.cursor, ConversationCursor) : undefined;
    const filter = filterKey(query.metadata);
    const search = searchKey(query.q);
    if (after && (after.sort !== query.sort_by || after.order !== query.order || after.filter !== filter || after.q !== search)) {
      throw apiError('invalid_cursor', { otherListing: true });
    }
    const rows = await createConversationsRepo(this.pool).listPage({
      smithId: smith.id,
      sortBy: query.sort_by,
      order: query.order,
      limit: query.limit,
      after: after ? { at: after.at, id: after.id } : undefined,
      metadata: query.metadata,
      titleContains: query.q || undefined,
    });
    const hasMore = rows.length > query.limit;
    const page = rows.slice(0, query.limit);
    const last = page[page.length - 1];
    return {
      object: 'list',
      data: page.map(presentConversation),
      next_cursor:
        hasMore && last
          ? this.cursors.encode('conversations', { at: last[query.sort_by], id: last.id, sort: query.sort_by, order: query.order, filter, q: search })
          : null,
      has_more: hasMore,
    };
  }

  async get(smith: SmithRow, id: string): Promise<ConversationObject> {
    return presentConversation(await this.requireConversation(smith, id));
  }

  /** Renames and/or merges metadata (a null value removes a key) under the row lock, so concurrent merges compose. */
  async update(smith: SmithRow, id: string, body: z.infer<typeof UpdateConversationBody>): Promise<ConversationObject> {
    const row = await this.pool.transaction(async (tx) => {
      const conversations = createConversationsRepo(tx);
      const current = await conversations.findForSmith(smith.id, id, { forUpdate: true });
      if (!current) throw conversationNotFound(id);
      let metadata: Record<string, string> | undefined;
      if (body.metadata === null) metadata = {};
      else if (body.metadata !== undefined) {
        metadata = { ...current.metadata };
        for (const [key, value] of Object.entries(body.metadata)) {
          if (value === null) delete metadata[key];
          else metadata[key] = value;
        }
        if (Object.keys(metadata).length > METADATA_MAX_PAIRS) {
          throw apiError('metadata_too_large', { max: METADATA_MAX_PAIRS, count: Object.keys(metadata).length });
        }
      }
      return conversations.update(id, { title: body.title, metadata });
    });
    return presentConversation(row);
  }

  async delete(smith: SmithRow, id: string): Promise<{ id: string; object: 'conversation.deleted'; deleted: true }> {
    const deleted = await createConversationsRepo(this.pool).softDelete(smith.id, id);
    if (!deleted) throw conversationNotFound(id);
    return { id, object: 'conversation.deleted', deleted: true };
  }

  async listItems(smith: SmithRow, conversationId: string, query: z.infer<typeof ListItemsQuery>): Promise<ItemList<Item>> {
    await this.requireConversation(smith, conversationId);
    const items = createItemsRepo(this.pool);
    let afterKey: number | undefined;
    if (query.after) {
      const anchor = await items.findInConversation(conversationId, query.after);
      if (!anchor) throw apiError('invalid_after', { kind: 'item', after: query.after, within: `conversation '${conversationId}'` });
      afterKey = anchor.position!;
    }
    const rows = await items.listConversationPage(conversationId, { order: query.order, limit: query.limit, afterKey });
    return toItemList(rows.slice(0, query.limit).map(presentItem), rows.length > query.limit);
  }

  async getItem(smith: SmithRow, conversationId: string, itemId: string): Promise<Item> {
    await this.requireConversation(smith, conversationId);
    const row = await createItemsRepo(this.pool).findInConversation(conversationId, itemId);
    if (!row) throw apiError('not_found', { resource: 'Item', id: itemId, within: `conversation '${conversationId}'` }, { param: 'item_id' });
    return presentItem(row);
  }

  private async requireConversation(smith: SmithRow, id: string) {
    const row = await createConversationsRepo(this.pool).findForSmith(smith.id, id);
    if (!row) throw conversationNotFound(id);
    return row;
  }
}

export const conversationNotFound = (id: string) => apiError('not_found', { resource: 'Conversation', id }, { param: 'conversation_id' });
