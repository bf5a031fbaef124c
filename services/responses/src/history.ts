import { createItemsRepo, createRunsRepo, type DatabasePool } from '@ic/db';
import type { RunRow, StoredItem } from '@ic/schemas';

interface CachedTranscript {
  lastPosition: number;
  items: StoredItem[];
}

/** A claimed turn with what it replays, or why it cannot run now. */
export type ClaimedTurn =
  | { outcome: 'claimed'; run: RunRow; prior: StoredItem[]; input: StoredItem[] }
  | { outcome: 'waiting' | 'finished'; run: RunRow }
  | { outcome: 'missing' };

/**
 * Claims a turn and loads what it replays in the same statement: the conversation's transcript (or
 * the previous_response_id chain) plus the turn's own input. Transcripts are append-only, so each
 * worker caches them per conversation and asks only for the items stamped since; a warm turn's claim
 * carries just those. The cache is least-recently-used and bounded by the number of items it holds
 * across conversations.
 */
export class HistoryLoader {
  private readonly cache = new Map<string, CachedTranscript>();
  private cachedItems = 0;

  constructor(
    private readonly pool: DatabasePool,
    private readonly maxCachedItems = 100000,
  ) {}

  /** `conversationId`: the run's conversation if the caller knows it (the job says), so the claim reads only what the cache lacks. */
  async claim(runId: string, conversationId: string | null): Promise<ClaimedTurn> {
    const cached = conversationId ? this.cache.get(conversationId) : undefined;
    const afterPosition = cached ? cached.lastPosition : -1;
    const result = await createRunsRepo(this.pool).claimWithHistory(runId, conversationId && cached ? { conversationId, afterPosition } : null);
    if (result.outcome !== 'claimed') return result;
    const { run } = result;
    let prior: StoredItem[] = result.chain ?? [];
    if (run.conversation_id) {
      const readAfter = run.conversation_id === conversationId ? afterPosition : -1;
      prior = await this.extend(run.conversation_id, readAfter, result.transcriptAfter ?? []);
    }
    return { outcome: 'claimed', run, prior, input: result.input };
  }

  /**
   * What a turn claimed with its accept replays: the conversation's first `transcriptLength` items (the
   * accept read that length under the row lock, and as the head every earlier turn is stamped). From the
   * cache when it holds exactly that, without a read; otherwise read after what the cache holds.
   */
  async priorOfAccepted(conversationId: string, transcriptLength: number): Promise<StoredItem[]> {
    const cachedUpTo = this.cache.get(conversationId)?.lastPosition ?? -1;
    const lastPosition = transcriptLength - 1;
    if (cachedUpTo === lastPosition) return this.extend(conversationId, cachedUpTo, []);
    // A cache ahead of the transcript cannot be right: read all of it.
    const readAfter = cachedUpTo < lastPosition ? cachedUpTo : -1;
    return this.extend(conversationId, readAfter, await createItemsRepo(this.pool).listConversationAfter(conversationId, readAfter));
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

  /** Adds the items read after `readAfter` to the cached transcript and returns all of it. */
  private async extend(conversationId: string, readAfter: number, fresh: ReadonlyArray<{ position: number; body: StoredItem }>): Promise<StoredItem[]> {
    let cached = this.cache.get(conversationId);
    if (cached && cached.lastPosition !== readAfter) {
      // The cache moved while the claim was in flight (or was not used): start it afresh.
      this.cache.delete(conversationId);
      this.cachedItems -= cached.items.length;
      cached = undefined;
    }
    if (!cached && readAfter >= 0) {
      // The claim read only a tail this worker no longer holds: read the whole transcript (rare).
      return this.extend(conversationId, -1, await createItemsRepo(this.pool).listConversationAfter(conversationId, -1));
    }
    const entry = cached ?? { lastPosition: -1, items: [] };
    for (const row of fresh) entry.items.push(row.body);
    if (fresh.length > 0) entry.lastPosition = fresh[fresh.length - 1]!.position;
    // Re-inserted last: Map order is the recency order eviction walks.
    this.cache.delete(conversationId);
    this.cache.set(conversationId, entry);
    this.cachedItems += fresh.length;
    const items = entry.items.slice();
    this.evict();
    return items;
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
