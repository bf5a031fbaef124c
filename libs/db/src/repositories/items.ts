import { ItemRow, type StoredItem } from '@ic/schemas';
import { z } from 'zod';
import type { IdentifierSqlToken } from 'slonik';
import { EMPTY_FRAGMENT, jsonb, ORDER_DIRECTIONS, sql, type CommonQueryMethods } from '../pool';

const columns = sql.fragment`id, run_id, direction, ordinal, conversation_id, position, body`;

// Row schemas built once: zod 3 builds a schema slowly, and the result parser compiles a parser per schema (row-parser.ts).
const PositionedBodyRow = z.object({ position: z.number(), body: ItemRow.shape.body });
const IdentifiedBodyRow = z.object({ id: z.string(), body: ItemRow.shape.body });

export interface NewItem {
  id: string;
  runId: string;
  direction: 'input' | 'output';
  ordinal: number;
  conversationId: string | null;
  position: number | null;
  body: StoredItem;
}

export interface ItemPageRequest {
  order: 'asc' | 'desc';
  limit: number;
  /** Exclusive bound: the position (or run ordinal) of the `after` item. */
  afterKey?: number;
}

const direction = (page: ItemPageRequest) => ORDER_DIRECTIONS[page.order];

/** The exclusive keyset bound for the next page in the page's order. */
function keysetAfter(column: IdentifierSqlToken, page: ItemPageRequest) {
  if (page.afterKey === undefined) return EMPTY_FRAGMENT;
  return page.order === 'desc' ? sql.fragment`AND ${column} < ${page.afterKey}` : sql.fragment`AND ${column} > ${page.afterKey}`;
}

export function createItemsRepo(db: CommonQueryMethods) {
  return {
    /** Bulk insert in one statement. */
    insertMany: async (items: NewItem[]) => {
      if (items.length === 0) return;
      await db.query(sql.typeAlias('void')`
        INSERT INTO items (id, run_id, direction, ordinal, conversation_id, position, body)
        SELECT id, run_id, direction, ordinal, conversation_id, position, body
        FROM jsonb_to_recordset(${jsonb(
          items.map((item) => ({
            id: item.id,
            run_id: item.runId,
            direction: item.direction,
            ordinal: item.ordinal,
            conversation_id: item.conversationId,
            position: item.position,
            body: item.body,
          })),
        )}) AS t(id text, run_id text, direction text, ordinal integer, conversation_id text, position bigint, body jsonb)`);
    },

    /** Puts a run's input items into the transcript at `firstPosition + ordinal`. */
    attachInputsToConversation: (runId: string, conversationId: string, firstPosition: number) =>
      db.query(sql.typeAlias('void')`
        UPDATE items SET conversation_id = ${conversationId}, position = ${firstPosition} + ordinal
        WHERE run_id = ${runId} AND direction = 'input' AND conversation_id IS NULL`),

    /** One transcript page: an index range scan on (conversation_id, position), whatever the depth. */
    listConversationPage: (conversationId: string, page: ItemPageRequest) =>
      db.any(sql.type(ItemRow)`/* prepared: items.page */
        SELECT ${columns} FROM items WHERE conversation_id = ${conversationId} ${keysetAfter(sql.identifier(['position']), page)}
        ORDER BY position ${direction(page)} LIMIT ${page.limit + 1}`),

    findInConversation: (conversationId: string, itemId: string) =>
      db.maybeOne(sql.type(ItemRow)`SELECT ${columns} FROM items WHERE id = ${itemId} AND conversation_id = ${conversationId}`),

    listRunPage: (runId: string, itemDirection: 'input' | 'output', page: ItemPageRequest) =>
      db.any(sql.type(ItemRow)`
        SELECT ${columns} FROM items WHERE run_id = ${runId} AND direction = ${itemDirection} ${keysetAfter(sql.identifier(['ordinal']), page)}
        ORDER BY ordinal ${direction(page)} LIMIT ${page.limit + 1}`),

    findInRun: (runId: string, itemId: string) =>
      db.maybeOne(sql.type(ItemRow)`SELECT ${columns} FROM items WHERE id = ${itemId} AND run_id = ${runId}`),

    listByRun: (runId: string) => db.any(sql.type(ItemRow)`SELECT ${columns} FROM items WHERE run_id = ${runId} ORDER BY ordinal`),

    /** Transcript items after `afterPosition` (or all), in order: the history a turn replays. */
    listConversationAfter: (conversationId: string, afterPosition: number) =>
      db.any(sql.type(PositionedBodyRow)`
        SELECT position, body FROM items WHERE conversation_id = ${conversationId} AND position > ${afterPosition}
        ORDER BY position`),

    /**
     * The bodies of the given items that this smith can read: items of its runs that are not hidden
     * (DELETE, or an answered `store: false` run), or that sit in one of its live conversations.
     */
    findReadableBodies: (smithId: string, itemIds: readonly string[]) =>
      db.any(sql.type(IdentifiedBodyRow)`
        SELECT items.id, items.body FROM items JOIN runs ON runs.id = items.run_id
        WHERE items.id = ANY(${sql.array(itemIds, 'text')}) AND runs.smith_id = ${smithId}
          AND (runs.deleted_at IS NULL
            OR EXISTS (SELECT 1 FROM conversations WHERE conversations.id = items.conversation_id AND conversations.deleted_at IS NULL))`),

    /** The conversation's first user message, only while no title has been chosen (none for a missing or deleted conversation): the titler's one read. */
    firstUserMessageWhileUntitled: (conversationId: string) =>
      db.maybeOne(sql.type(ItemRow)`/* prepared: items.firstUserMessageWhileUntitled */
        SELECT ${columns} FROM items
        WHERE conversation_id = ${conversationId} AND body->>'type' = 'message' AND body->>'role' = 'user'
          AND EXISTS (SELECT 1 FROM conversations WHERE id = ${conversationId} AND title_source IS NULL AND deleted_at IS NULL)
        ORDER BY position LIMIT 1`),
  };
}
