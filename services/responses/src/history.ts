import { createItemsRepo, createRunsRepo, type DatabasePool } from '@ic/db';
import type { RunRow, StoredItem } from '@ic/schemas';

interface CachedTranscript {
  lastPosition: number;
  items: StoredItem[];
}

/**
 * Loads what a turn replays: the conversation's transcript (or the previous_response_id chain) plus
 * the turn's own input. Transcripts are append-only, so each worker caches them per conversation and
 * reads only the items stamped since; a warm turn costs one indexed read of the new items. The cache
 * is least-recently-used and bounded by the number of items it holds across conversations.
 */
export class HistoryLoader {
  private readonly cache = new Map<string, CachedTranscript>();
  private cachedItems = 0;

  constructor(
    private readonly pool: DatabasePool,
    private readonly maxCachedItems = 100000,
  ) {}

  async forRun(run: RunRow): Promise<{ prior: StoredItem[]; input: StoredItem[] }> {
    const items = createItemsRepo(this.pool);
    const [prior, own] = await Promise.all([
      run.conversation_id
        ? this.transcript(run.conversation_id)
        : run.previous_response_id
          ? this.chain(run.previous_response_id)
          : Promise.resolve([] as StoredItem[]),
      items.listRunPage(run.id, 'input', { order: 'asc', limit: 100000 }),
    ]);
    return { prior, input: own.map((row) => row.body) };
  }

  /** Called after a stamp commits, so the next turn needs no read at all when nothing else wrote. */
  recordStamped(conversationId: string, firstPosition: number, stamped: readonly StoredItem[]): void {
    const cached = this.cache.get(conversationId);
    if (!cached) return;
    if (cached.lastPosition !== firstPosition - 1) {
      this.cache.delete(conversationId);
      this.cachedItems -= cached.items.length;
      return;
    }
    cached.items.push(...stamped);
    cached.lastPosition = firstPosition + stamped.length - 1;
    this.cachedItems += stamped.length;
    this.evict();
  }

  /** Drops least recently used transcripts until the cache is within its item budget. */
  private evict(): void {
    for (const [conversationId, transcript] of this.cache) {
      if (this.cachedItems <= this.maxCachedItems) break;
      this.cache.delete(conversationId);
      this.cachedItems -= transcript.items.length;
    }
  }

  /** Items currently cached, across conversations. */
  get size(): number {
    return this.cachedItems;
  }

  private async transcript(conversationId: string): Promise<StoredItem[]> {
    const cached = this.cache.get(conversationId) ?? { lastPosition: -1, items: [] };
    const fresh = await createItemsRepo(this.pool).listConversationAfter(conversationId, cached.lastPosition);
    for (const row of fresh) cached.items.push(row.body);
    if (fresh.length > 0) cached.lastPosition = fresh[fresh.length - 1]!.position;
    // Re-inserted last: Map order is the recency order eviction walks.
    if (this.cache.delete(conversationId)) this.cachedItems -= cached.items.length - fresh.length;
    this.cache.set(conversationId, cached);
    this.cachedItems += cached.items.length;
    const items = cached.items.slice();
    this.evict();
    return items;
  }

  private async chain(lastRunId: string): Promise<StoredItem[]> {
    const runIds = await createRunsRepo(this.pool).chainEndingAt(lastRunId);
    const rows = await createItemsRepo(this.pool).listForRuns(runIds);
    return rows.map((row) => row.body);
  }
}

/** Rough token count of an item (about four characters a token), enough to keep a request within budget. */
export function estimateTokens(item: StoredItem): number {
  return Math.ceil(JSON.stringify(item).length / 4);
}

/**
 * `truncation: "auto"`: drops the oldest prior turns until the request fits `budgetTokens`. Cuts only
 * where a user message starts, so a tool call is never separated from its output; this turn's own
 * input is always kept. Returns how many prior items were dropped.
 */
export function truncateHistory(prior: readonly StoredItem[], input: readonly StoredItem[], budgetTokens: number): { kept: StoredItem[]; dropped: number } {
  let total = [...prior, ...input].reduce((sum, item) => sum + estimateTokens(item), 0);
  let start = 0;
  while (total > budgetTokens && start < prior.length) {
    // Drop one whole turn: up to (not including) the next user message.
    let next = start + 1;
    while (next < prior.length && !isUserMessage(prior[next]!)) next++;
    for (let index = start; index < next; index++) total -= estimateTokens(prior[index]!);
    start = next;
  }
  return { kept: prior.slice(start), dropped: start };
}

const isUserMessage = (item: StoredItem) => item.type === 'message' && item.role === 'user';
