import { z } from 'zod';
import { ConversationId, ItemId, SmithId } from './ids';

export const API_VERSIONS = ['2026-05-01'] as const;
export const CURRENT_API_VERSION = API_VERSIONS[API_VERSIONS.length - 1]!;

/** OpenAI's metadata limits: at most 16 pairs, keys ≤ 64 characters, string values ≤ 512 characters. */
export const METADATA_MAX_PAIRS = 16;
const MetadataKey = z.string().min(1, 'metadata keys must not be empty').max(64, 'metadata keys must be at most 64 characters');
const MetadataValue = z.string({ invalid_type_error: 'metadata values must be strings' }).max(512, 'metadata values must be at most 512 characters');
export const Metadata = z
  .record(MetadataKey, MetadataValue)
  .refine((value) => Object.keys(value).length <= METADATA_MAX_PAIRS, `metadata may hold at most ${METADATA_MAX_PAIRS} pairs`);
export type Metadata = z.infer<typeof Metadata>;
/** In an update, a null value removes that key. */
export const MetadataPatch = z.record(MetadataKey, MetadataValue.nullable());

export const TITLE_MAX_LENGTH = 256;
const Title = z
  .string()
  .max(TITLE_MAX_LENGTH, `title must be at most ${TITLE_MAX_LENGTH} characters`)
  .transform((value) => value.trim())
  .refine((value) => value.length > 0, 'title must not be empty; send null to clear it');

export const CreateConversationBody = z
  .object({
    title: Title.nullish(),
    metadata: Metadata.nullish(),
    items: z.array(z.unknown()).nullish(),
  })
  .strict()
  .superRefine((body, ctx) => {
    if (body.items && body.items.length > 0) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ['items'],
        message: 'Items are read-only: they accrue from the runs you drive with POST /v1/responses. Create the conversation without items.',
      });
    }
  });

export const UpdateConversationBody = z
  .object({ title: Title.nullable().optional(), metadata: MetadataPatch.nullable().optional() })
  .strict();

/** A decimal integer 1–100 (query strings only; `1e2` or `0x10` are refused). */
const Limit = z
  .string()
  .regex(/^\d{1,3}$/, 'limit must be an integer between 1 and 100')
  .transform(Number)
  .pipe(z.number().min(1, 'limit must be an integer between 1 and 100').max(100, 'limit must be an integer between 1 and 100'))
  .default('20');
export const SEARCH_QUERY_MAX_LENGTH = 200;
const Include = z.union([z.string(), z.array(z.string())]).optional();

export const ListConversationsQuery = z
  .object({
    /** Filled from `metadata[key]=value` query parameters: conversations whose metadata holds every pair. */
    metadata: Metadata.optional(),
    limit: Limit,
    cursor: z.string().max(1024).optional(),
    order: z.enum(['asc', 'desc']).default('desc'),
    /** `created_at` (default) or `updated_at`, the most recent activity, for chat sidebars. */
    sort_by: z.enum(['created_at', 'updated_at']).default('created_at'),
    /** Case-insensitive substring of the title, in any language; empty means no filter. */
    q: z
      .string({ invalid_type_error: 'q must be given once, as a string' })
      .max(SEARCH_QUERY_MAX_LENGTH, `q must be at most ${SEARCH_QUERY_MAX_LENGTH} characters`)
      .optional(),
  })
  .strict();

export const ListItemsQuery = z
  .object({
    limit: Limit,
    order: z.enum(['asc', 'desc']).default('asc'),
    after: ItemId.optional(),
    include: Include,
    'include[]': Include,
  })
  .strict();

/** Input items default to newest first, as OpenAI's input_items endpoint does. */
export const ListInputItemsQuery = ListItemsQuery.extend({ order: z.enum(['asc', 'desc']).default('desc') });

export const RetrieveItemQuery = z.object({ include: Include, 'include[]': Include }).strict();

export const ConversationObject = z.object({
  id: ConversationId,
  object: z.literal('conversation'),
  created_at: z.number().int(),
  updated_at: z.number().int(),
  title: z.string().nullable(),
  smith_id: SmithId,
  metadata: z.record(z.string()),
});
export type ConversationObject = z.infer<typeof ConversationObject>;

export interface ItemList<T> {
  object: 'list';
  data: T[];
  first_id: string | null;
  last_id: string | null;
  has_more: boolean;
}

export interface CursorList<T> {
  object: 'list';
  data: T[];
  next_cursor: string | null;
  has_more: boolean;
}
