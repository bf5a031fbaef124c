import { ConversationRow, type Metadata } from '@ic/schemas';
import { z } from 'zod';
import { EMPTY_FRAGMENT, jsonb, ORDER_DIRECTIONS, sql, type CommonQueryMethods } from '../pool';

const columns = sql.fragment`id, tenant_id, smith_id, title, title_source, metadata, created_at, updated_at`;
// Row schemas built once: zod 3 builds a schema slowly, and the result parser compiles a parser per schema (row-parser.ts).
const IdRow = z.object({ id: z.string() });
const RunSeqRow = z.object({ last_run_seq: z.number() });

// Built once, as pool.ts's EMPTY_FRAGMENT and ORDER_DIRECTIONS are.
const FOR_UPDATE = sql.fragment`FOR UPDATE`;
const PREPARED_LIST = sql.fragment`/* prepared: conversations.list */`;
const SORT_COLUMNS = { created_at: sql.identifier(['created_at']), updated_at: sql.identifier(['updated_at']) } as const;

export type ConversationSort = 'created_at' | 'updated_at';
export interface ConversationPageRequest {
  smithId: string;
  sortBy: ConversationSort;
  order: 'asc' | 'desc';
  limit: number;
  /** The sort key (epoch ms) and id of the last row of the previous page. */
  after?: { at: number; id: string };
  /** Only conversations whose metadata holds every one of these pairs. */
  metadata?: Record<string, string>;
  /** Only conversations whose title contains this text, case-insensitively (taken literally: no wildcards). */
  titleContains?: string;
}

/** LIKE treats % _ and \ as pattern syntax; a searched title takes them literally. */
const escapeLike = (text: string) => text.replace(/[\\%_]/g, '\\$&');

export function createConversationsRepo(db: CommonQueryMethods) {
  return {
    insert: (conversation: { id: string; tenantId: string; smithId: string; title: string | null; metadata: Metadata }) =>
      db.one(sql.type(ConversationRow)`/* prepared: conversations.insert */
        INSERT INTO conversations (id, tenant_id, smith_id, title, title_source, metadata)
        VALUES (${conversation.id}, ${conversation.tenantId}, ${conversation.smithId}, ${conversation.title},
                ${conversation.title === null ? null : 'user'}, ${jsonb(conversation.metadata)})
        RETURNING ${columns}`),

    /** A live conversation of this smith; another smith's (or a deleted) one is indistinguishable from a missing one. */
    findForSmith: (smithId: string, id: string, options: { forUpdate?: boolean } = {}) =>
      db.maybeOne(sql.type(ConversationRow)`/* prepared: conversations.find */
        SELECT ${columns} FROM conversations
        WHERE id = ${id} AND smith_id = ${smithId} AND deleted_at IS NULL
        ${options.forUpdate ? FOR_UPDATE : EMPTY_FRAGMENT}`),

    find: (id: string) => db.maybeOne(sql.type(ConversationRow)`SELECT ${columns} FROM conversations WHERE id = ${id}`),

    /** One keyset page (limit + 1 rows so the caller can tell whether more follow); uses the matching partial index. */
    listPage: (page: ConversationPageRequest) => {
      const sortColumn = SORT_COLUMNS[page.sortBy];
      const direction = ORDER_DIRECTIONS[page.order];
      const after = page.after
        ? page.order === 'desc'
          ? sql.fragment`AND (${sortColumn}, id) < (to_timestamp(${page.after.at} / 1000.0), ${page.after.id})`
          : sql.fragment`AND (${sortColumn}, id) > (to_timestamp(${page.after.at} / 1000.0), ${page.after.id})`
        : EMPTY_FRAGMENT;
      const metadata = page.metadata && Object.keys(page.metadata).length > 0 ? sql.fragment`AND metadata @> ${jsonb(page.metadata)}` : EMPTY_FRAGMENT;
      // Spelled exactly as the conversations_title_search index expression, so the trigram index serves it.
      const title = page.titleContains ? sql.fragment`AND lower(title) LIKE '%' || lower(${escapeLike(page.titleContains)}) || '%'` : EMPTY_FRAGMENT;
      // A filtered page is planned for its values (a rare word takes the trigram index, a common one the
      // sort index); an unfiltered page has one good plan whatever the smith, so it is prepared.
      const prepared = metadata === EMPTY_FRAGMENT && title === EMPTY_FRAGMENT ? PREPARED_LIST : EMPTY_FRAGMENT;
      return db.any(sql.type(ConversationRow)`${prepared}
        SELECT ${columns} FROM conversations
        WHERE smith_id = ${page.smithId} AND deleted_at IS NULL ${after} ${metadata} ${title}
        ORDER BY ${sortColumn} ${direction}, id ${direction}
        LIMIT ${page.limit + 1}`);
    },

    update: (id: string, changes: { title?: string | null; metadata?: Metadata }) =>
      db.one(sql.type(ConversationRow)`
        UPDATE conversations SET
          ${sql.join(
            [
              ...(changes.title !== undefined ? [sql.fragment`title = ${changes.title}, title_source = 'user'`] : []),
              ...(changes.metadata !== undefined ? [sql.fragment`metadata = ${jsonb(changes.metadata)}`] : []),
              sql.fragment`updated_at = now()`,
            ],
            sql.fragment`, `,
          )}
        WHERE id = ${id}
        RETURNING ${columns}`),

    softDelete: (smithId: string, id: string) =>
      db.maybeOneFirst(sql.type(IdRow)`
        UPDATE conversations SET deleted_at = now()
        WHERE id = ${id} AND smith_id = ${smithId} AND deleted_at IS NULL
        RETURNING id`),

    /** Takes the conversation's row lock and the next turn number; null if it is missing or deleted. */
    takeNextRunSeq: (smithId: string, id: string) =>
      db.maybeOneFirst(sql.type(RunSeqRow)`
        UPDATE conversations SET last_run_seq = last_run_seq + 1
        WHERE id = ${id} AND smith_id = ${smithId} AND deleted_at IS NULL
        RETURNING last_run_seq`),

    /** Sets a generated title only while no title was ever chosen by the user or generated before. */
    setAutoTitle: (id: string, title: string) =>
      db.maybeOneFirst(sql.type(IdRow)`/* prepared: conversations.setAutoTitle */
        UPDATE conversations SET title = ${title}, title_source = 'auto'
        WHERE id = ${id} AND title_source IS NULL AND deleted_at IS NULL
        RETURNING id`),
  };
}
