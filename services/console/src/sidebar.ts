/**
 * The Conversations sidebar: newest activity first (`sort_by=updated_at`), the next page fetched with
 * the cursor as the list scrolls to its end, and a Search box that filters by title (`q`).
 */
import { describeProblem, type ConsoleApi, type Conversation, type Problem } from './api';
import { h } from './dom';

export interface SidebarHooks {
  open(conversation: Conversation): void;
  newChat(): void;
  problem(problem: Problem): void;
}

const PAGE_SIZE = 30;
/** Fetch the next page when the end of the list is this close to being shown. */
const PREFETCH_PX = 240;

export class Sidebar {
  readonly element: HTMLElement;
  private readonly list = h('ul', { class: 'conversation-list', 'aria-label': 'Conversations' });
  private readonly scroller = h('div', { class: 'conversation-scroller' });
  private readonly more = h('p', { class: 'list-status', role: 'status' });
  private readonly search = h('input', { type: 'search', id: 'search', name: 'search', 'aria-label': 'Search', placeholder: 'Search titles', autocomplete: 'off' });
  private readonly entries = new Map<string, { conversation: Conversation; item: HTMLLIElement; button: HTMLButtonElement }>();
  private cursor: string | null = null;
  private hasMore = true;
  private loading = false;
  /** Bumped by every new listing, so the answer to an older one (a previous search) is dropped. */
  private generation = 0;
  private selected: string | null = null;
  private searchTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly api: ConsoleApi,
    private readonly hooks: SidebarHooks,
  ) {
    const newChat = h('button', { type: 'button', class: 'new-chat' }, 'New chat');
    newChat.addEventListener('click', () => hooks.newChat());
    this.search.addEventListener('input', () => {
      clearTimeout(this.searchTimer);
      this.searchTimer = setTimeout(() => this.reload(), 250);
    });
    this.scroller.append(this.list, this.more);
    this.scroller.addEventListener('scroll', () => this.maybeLoadMore(), { passive: true });
    this.element = h('nav', { class: 'sidebar', 'aria-label': 'Conversation list' }, newChat, h('div', { class: 'search' }, this.search), this.scroller);
  }

  get(id: string): Conversation | undefined {
    return this.entries.get(id)?.conversation;
  }

  /** Starts the listing again from the top (sign-in, a new search). */
  reload(): void {
    this.generation++;
    this.entries.clear();
    this.list.replaceChildren();
    this.cursor = null;
    this.hasMore = true;
    this.loading = false;
    void this.loadMore();
  }

  dispose(): void {
    clearTimeout(this.searchTimer);
    this.generation++;
  }

  select(id: string | null): void {
    this.selected = id;
    for (const [entryId, entry] of this.entries) {
      if (entryId === id) entry.button.setAttribute('aria-current', 'page');
      else entry.button.removeAttribute('aria-current');
    }
  }

  /** Adds or refreshes an entry; `atTop` puts it first (it just had activity). */
  upsert(conversation: Conversation, atTop: boolean): void {
    const existing = this.entries.get(conversation.id);
    if (existing) {
      existing.conversation = conversation;
      existing.button.textContent = titleOf(conversation);
      if (atTop) this.list.prepend(existing.item);
      return;
    }
    if (!atTop) return; // not listed (another page, or filtered out by the search)
    const entry = this.entryFor(conversation);
    this.list.prepend(entry.item);
  }

  /** The conversation had activity: newest first puts it at the top. */
  touch(id: string): void {
    const entry = this.entries.get(id);
    if (entry && this.list.firstElementChild !== entry.item) this.list.prepend(entry.item);
  }

  remove(id: string): void {
    this.entries.get(id)?.item.remove();
    this.entries.delete(id);
  }

  private entryFor(conversation: Conversation) {
    const button = h('button', { type: 'button', class: 'conversation', 'aria-current': conversation.id === this.selected ? 'page' : undefined }, titleOf(conversation));
    const item = h('li', {}, button);
    const entry = { conversation, item, button };
    button.addEventListener('click', () => this.hooks.open(entry.conversation));
    this.entries.set(conversation.id, entry);
    return entry;
  }

  private maybeLoadMore(): void {
    const { scrollTop, clientHeight, scrollHeight } = this.scroller;
    if (scrollTop + clientHeight >= scrollHeight - PREFETCH_PX) void this.loadMore();
  }

  private async loadMore(): Promise<void> {
    if (this.loading || !this.hasMore) return;
    this.loading = true;
    const generation = this.generation;
    this.more.textContent = 'Loading…';
    try {
      const query = this.search.value.trim();
      const page = await this.api.listConversations({ cursor: this.cursor, query: query || undefined, limit: PAGE_SIZE });
      if (generation !== this.generation) return;
      for (const conversation of page.data) {
        if (!this.entries.has(conversation.id)) this.list.append(this.entryFor(conversation).item);
      }
      this.cursor = page.next_cursor;
      this.hasMore = page.has_more && page.next_cursor !== null;
      this.more.textContent = this.entries.size === 0 ? (query ? 'No conversation matches.' : 'No conversations yet.') : '';
    } catch (error) {
      if (generation !== this.generation) return;
      this.more.textContent = '';
      this.hooks.problem(describeProblem(error));
      return;
    } finally {
      if (generation === this.generation) this.loading = false;
    }
    // A short list may not fill the sidebar, so no scroll would ever ask for the next page.
    this.maybeLoadMore();
  }
}

const titleOf = (conversation: Conversation): string => conversation.title ?? 'Untitled conversation';
