/**
 * The public API as a tenant's browser app would call it: the official `openai` client with a smith
 * token (browser-safe, hence dangerouslyAllowBrowser), pointed at this page's own origin by default.
 */
import OpenAI, { APIConnectionError, APIError, APIUserAbortError } from 'openai';
import type { ResponseStreamEvent } from 'openai/resources/responses/responses';
import type { ConversationItem } from 'openai/resources/conversations/items';
import type { Stream } from 'openai/streaming';

/** A conversation as Ingram lists it (the OpenAI object plus Ingram's title, smith and updated_at). */
export interface Conversation {
  id: string;
  title: string | null;
  created_at: number;
  updated_at: number;
  metadata: Record<string, string>;
}

export interface ConversationPage {
  data: Conversation[];
  next_cursor: string | null;
  has_more: boolean;
}

export type { ConversationItem, ResponseStreamEvent };

export class ConsoleApi {
  private readonly client: OpenAI;

  constructor(token: string, baseURL: string) {
    // No automatic retries: a 429 or an outage is shown to the person, who decides when to try again.
    this.client = new OpenAI({ apiKey: token, baseURL, dangerouslyAllowBrowser: true, maxRetries: 0 });
  }

  /** Newest activity first; `query` filters by title (case-insensitive substring). */
  listConversations(options: { cursor?: string | null; query?: string; limit?: number }): Promise<ConversationPage> {
    const query: Record<string, string> = { sort_by: 'updated_at', limit: String(options.limit ?? 30) };
    if (options.cursor) query.cursor = options.cursor;
    if (options.query) query.q = options.query;
    return this.client.get<ConversationPage>('/conversations', { query });
  }

  createConversation(): Promise<Conversation> {
    return this.client.post<Conversation>('/conversations', { body: {} });
  }

  getConversation(id: string): Promise<Conversation> {
    return this.client.get<Conversation>(`/conversations/${encodeURIComponent(id)}`);
  }

  renameConversation(id: string, title: string): Promise<Conversation> {
    return this.client.post<Conversation>(`/conversations/${encodeURIComponent(id)}`, { body: { title } });
  }

  async deleteConversation(id: string): Promise<void> {
    await this.client.conversations.delete(id);
  }

  /** The latest `limit` items, oldest first. */
  async recentItems(conversationId: string, limit = 100): Promise<ConversationItem[]> {
    const page = await this.client.conversations.items.list(conversationId, { order: 'desc', limit });
    return page.data.reverse();
  }

  /** Starts a turn; the service queues it behind a running one (its default). */
  startTurn(conversationId: string, input: string, signal: AbortSignal): Promise<Stream<ResponseStreamEvent>> {
    return this.client.responses.create({ model: '', conversation: conversationId, input, stream: true }, { signal });
  }

  /** Resumes a run's event stream after the event numbered `startingAfter` (-1: from the start). */
  resumeTurn(responseId: string, startingAfter: number, signal: AbortSignal): Promise<Stream<ResponseStreamEvent>> {
    const query = startingAfter >= 0 ? { stream: true as const, starting_after: startingAfter } : { stream: true as const };
    return this.client.responses.retrieve(responseId, query, { signal });
  }

  async cancelTurn(responseId: string): Promise<void> {
    await this.client.responses.cancel(responseId);
  }
}

/** What went wrong, in words a person understands, and what the page should do about it. */
export interface Problem {
  kind: 'auth' | 'scope' | 'rate' | 'network' | 'aborted' | 'other';
  message: string;
}

export function describeProblem(error: unknown): Problem {
  if (error instanceof APIUserAbortError) return { kind: 'aborted', message: 'Stopped.' };
  if (error instanceof APIConnectionError) return { kind: 'network', message: 'Cannot reach the server. Check your connection and try again.' };
  if (error instanceof APIError) {
    const serverMessage = messageOf(error);
    switch (error.status) {
      case 401:
        return { kind: 'auth', message: `Your token was not accepted (${serverMessage}) Sign in with a valid smith token.` };
      case 403:
        return { kind: 'scope', message: `This token is not allowed to do that: ${serverMessage}` };
      case 429: {
        const seconds = retryAfterSeconds(error.headers);
        const wait = seconds === null ? 'a moment' : `${seconds} second${seconds === 1 ? '' : 's'}`;
        return { kind: 'rate', message: `Too many requests: wait ${wait} and try again.` };
      }
      default:
        return { kind: 'other', message: serverMessage };
    }
  }
  return { kind: 'other', message: error instanceof Error ? error.message : String(error) };
}

function messageOf(error: APIError): string {
  const body = error.error as { message?: unknown } | undefined;
  if (body && typeof body.message === 'string' && body.message) return body.message;
  return error.status ? `The server answered ${error.status}.` : error.message;
}

function retryAfterSeconds(headers: Headers | undefined): number | null {
  const value = headers?.get('retry-after');
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(1, Math.ceil(seconds));
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(1, Math.ceil((date - Date.now()) / 1000));
}
