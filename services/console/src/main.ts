/**
 * The console: a chat tab on a smith token, built on the public API only (what a tenant's own app
 * would do). Sign in, the Conversations sidebar, and the open conversation.
 */
import { ConsoleApi, describeProblem, type Conversation, type Problem } from './api';
import { h } from './dom';
import {
  conversationInAddress,
  dropPending,
  forgetToken,
  pendingTurns,
  savedToken,
  saveToken,
  showConversationInAddress,
  takeTokenFromFragment,
} from './session';
import { Sidebar } from './sidebar';
import { itemView, Turn, type TurnHooks } from './turn';
import './style.css';

const apiBase = new URL('/v1', location.origin).toString();
const root = document.getElementById('app')!;

function showLogin(message = ''): void {
  const input = h('input', { id: 'token', name: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true, placeholder: 'ics_…' });
  const form = h(
    'form',
    { class: 'login', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title' }, 'Ingram Console'),
    h('p', {}, 'Paste a smith token to open its conversations. It is kept in this tab only.'),
    h('label', { for: 'token' }, 'Smith token'),
    input,
    message ? h('p', { class: 'problem', role: 'alert' }, message) : null,
    h('button', { type: 'submit' }, 'Sign in'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    saveToken(token);
    startConsole(token);
  });
  root.replaceChildren(h('main', { class: 'login-page' }, form));
  input.focus();
}

class ConsoleApp {
  private readonly api: ConsoleApi;
  private readonly sidebar: Sidebar;
  private current: Conversation | null = null;
  /** Turns still streaming, whichever conversation is open; the open one's are on screen. */
  private readonly liveTurns = new Set<Turn>();
  private readonly transcript = h('ol', { class: 'transcript', role: 'log', 'aria-label': 'Messages', 'aria-live': 'polite' });
  private readonly heading = h('h2', { class: 'conversation-title', id: 'conversation-title' }, 'New chat');
  private readonly headerTools = h('div', { class: 'conversation-tools' });
  private readonly problemBox = h('p', { class: 'problem', role: 'alert', hidden: true });
  private readonly messageBox = h('textarea', { id: 'message', name: 'message', rows: '2', 'aria-label': 'Message', placeholder: 'Write a message (Enter sends, Shift+Enter for a new line)' });
  private readonly sendButton = h('button', { type: 'submit', class: 'send' }, 'Send');
  private readonly stopButton = h('button', { type: 'button', class: 'stop', disabled: true }, 'Stop');
  private readonly renameButton = h('button', { type: 'button' }, 'Rename');
  private readonly deleteButton = h('button', { type: 'button', class: 'danger' }, 'Delete');
  private loadGeneration = 0;
  private followEnd = true;

  constructor(token: string) {
    this.api = new ConsoleApi(token, apiBase);
    this.sidebar = new Sidebar(this.api, {
      open: (conversation) => void this.open(conversation),
      newChat: () => this.newChat(),
      problem: (problem) => this.handleProblem(problem),
    });
    this.renameButton.addEventListener('click', () => this.startRename());
    this.deleteButton.addEventListener('click', () => this.confirmDelete());
    this.headerTools.append(this.renameButton, this.deleteButton);

    const composer = h('form', { class: 'composer', 'aria-label': 'Send a message' }, this.messageBox, h('div', { class: 'composer-buttons' }, this.stopButton, this.sendButton));
    composer.addEventListener('submit', (event) => {
      event.preventDefault();
      void this.send(this.messageBox.value);
    });
    this.messageBox.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        composer.requestSubmit();
      }
    });
    this.stopButton.addEventListener('click', () => void this.stop());
    // Follow a streaming answer only while the reader is at the end: scrolling up to read stays put.
    this.transcript.addEventListener('scroll', () => {
      const { scrollTop, clientHeight, scrollHeight } = this.transcript;
      this.followEnd = scrollHeight - scrollTop - clientHeight < 48;
    }, { passive: true });
    this.transcript.addEventListener('turn-rendered', () => {
      if (this.followEnd) this.scrollToEnd();
    });

    const signOut = h('button', { type: 'button', class: 'sign-out' }, 'Sign out');
    signOut.addEventListener('click', () => this.signOut());
    root.replaceChildren(
      h('header', { class: 'top-bar' }, h('h1', {}, 'Ingram Console'), signOut),
      h(
        'div',
        { class: 'layout' },
        this.sidebar.element,
        h('main', { class: 'chat', 'aria-labelledby': 'conversation-title' }, h('div', { class: 'conversation-header' }, this.heading, this.headerTools), this.transcript, this.problemBox, composer),
      ),
    );
    this.sidebar.reload();
    window.addEventListener('hashchange', this.followAddress);
    const inAddress = conversationInAddress();
    if (inAddress) void this.openById(inAddress);
    else this.newChat();
  }

  /** A link to another conversation opened in this tab (`#conversation=cnv_…`). */
  private readonly followAddress = (): void => {
    const inAddress = conversationInAddress();
    if (inAddress && inAddress !== this.current?.id) void this.openById(inAddress);
  };

  private newChat(): void {
    this.current = null;
    this.loadGeneration++;
    showConversationInAddress(null);
    this.sidebar.select(null);
    this.heading.textContent = 'New chat';
    this.headerTools.hidden = true;
    this.transcript.replaceChildren();
    this.clearProblem();
    this.updateStop();
    this.messageBox.focus();
  }

  private async openById(id: string): Promise<void> {
    try {
      await this.open(await this.api.getConversation(id));
    } catch (error) {
      this.handleProblem(describeProblem(error));
      this.newChat();
    }
  }

  private async open(conversation: Conversation): Promise<void> {
    const generation = ++this.loadGeneration;
    this.current = conversation;
    showConversationInAddress(conversation.id);
    this.sidebar.select(conversation.id);
    this.showTitle(conversation);
    this.headerTools.hidden = false;
    this.clearProblem();
    this.transcript.replaceChildren(h('li', { class: 'loading' }, 'Loading…'));
    try {
      const items = await this.api.recentItems(conversation.id);
      if (generation !== this.loadGeneration) return;
      const runsShown = new Set(items.map((item) => (item.id ?? '').split('.')[0]));
      const rows: HTMLElement[] = [];
      for (const item of items) {
        const view = itemView(item);
        if (view) rows.push(h('li', { class: 'item' }, view));
      }
      this.transcript.replaceChildren(...rows);
      // Turns still streaming in this tab, then those that were streaming before a reload.
      for (const turn of this.liveTurns) {
        if (turn.conversationId === conversation.id && !(turn.responseId && runsShown.has(turn.responseId))) this.transcript.append(turn.element);
      }
      for (const pending of pendingTurns(conversation.id)) {
        if (runsShown.has(pending.responseId)) {
          dropPending(pending.responseId); // it finished while the page was away: the transcript shows it
          continue;
        }
        if ([...this.liveTurns].some((turn) => turn.responseId === pending.responseId)) continue;
        const turn = this.track(new Turn(this.api, conversation.id, pending.input, this.turnHooks));
        this.transcript.append(turn.element);
        turn.resume(pending);
      }
      this.updateStop();
      this.scrollToEnd();
    } catch (error) {
      if (generation === this.loadGeneration) this.handleProblem(describeProblem(error));
    }
  }

  private readonly turnHooks: TurnHooks = {
    changed: () => this.updateStop(),
    finished: (turn, outcome) => {
      this.liveTurns.delete(turn);
      this.updateStop();
      if (outcome === 'completed' || outcome === 'incomplete') void this.afterTurn(turn.conversationId);
    },
    problem: (problem) => this.handleProblem(problem),
    retry: (input) => void this.send(input, false),
  };

  private track(turn: Turn): Turn {
    this.liveTurns.add(turn);
    return turn;
  }

  private async send(text: string, fromComposer = true): Promise<void> {
    if (!text.trim()) return;
    this.clearProblem();
    let conversation = this.current;
    if (!conversation) {
      try {
        conversation = await this.api.createConversation();
      } catch (error) {
        this.handleProblem(describeProblem(error));
        return;
      }
      this.current = conversation;
      this.loadGeneration++;
      showConversationInAddress(conversation.id);
      this.sidebar.upsert(conversation, true);
      this.sidebar.select(conversation.id);
      this.showTitle(conversation);
      this.headerTools.hidden = false;
    }
    if (fromComposer) this.messageBox.value = '';
    const turn = this.track(new Turn(this.api, conversation.id, text, this.turnHooks));
    this.transcript.append(turn.element);
    this.scrollToEnd();
    turn.start();
    this.sidebar.touch(conversation.id);
    this.updateStop();
  }

  /** The running turn of the open conversation (the oldest unfinished one): Stop cancels it. */
  private runningTurn(): Turn | undefined {
    const mine = [...this.liveTurns].filter((turn) => turn.conversationId === this.current?.id && turn.running);
    return mine.find((turn) => turn.status === 'in_progress') ?? mine[0];
  }

  private async stop(): Promise<void> {
    const turn = this.runningTurn();
    if (!turn) return;
    try {
      await turn.stop();
    } catch (error) {
      this.handleProblem(describeProblem(error));
    }
  }

  private updateStop(): void {
    this.stopButton.disabled = this.runningTurn() === undefined;
  }

  /** A finished turn moved the conversation to the top; its first one gets a title shortly after. */
  private async afterTurn(conversationId: string): Promise<void> {
    this.sidebar.touch(conversationId);
    for (let attempt = 0; attempt < 20; attempt++) {
      const known = this.sidebar.get(conversationId) ?? (this.current?.id === conversationId ? this.current : undefined);
      if (known?.title) return;
      await new Promise((resolve) => setTimeout(resolve, 250 + attempt * 100));
      try {
        const fresh = await this.api.getConversation(conversationId);
        if (fresh.title) {
          this.updated(fresh);
          return;
        }
      } catch {
        return; // deleted meanwhile, or signed out
      }
    }
  }

  private updated(conversation: Conversation): void {
    this.sidebar.upsert(conversation, false);
    if (this.current?.id === conversation.id) {
      this.current = conversation;
      this.showTitle(conversation);
    }
  }

  private showTitle(conversation: Conversation): void {
    this.heading.textContent = conversation.title ?? 'Untitled conversation';
  }

  private startRename(): void {
    const conversation = this.current;
    if (!conversation) return;
    const input = h('input', { type: 'text', 'aria-label': 'Title', value: conversation.title ?? '', maxlength: '512' });
    const save = h('button', { type: 'submit' }, 'Save');
    const cancel = h('button', { type: 'button' }, 'Cancel');
    const form = h('form', { class: 'rename', 'aria-label': 'Rename conversation' }, input, save, cancel);
    const restore = () => {
      form.replaceWith(this.heading);
      this.headerTools.hidden = false;
      this.renameButton.focus();
    };
    cancel.addEventListener('click', restore);
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') restore();
    });
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const title = input.value.trim();
      if (!title) return;
      save.disabled = true;
      this.api.renameConversation(conversation.id, title).then(
        (renamed) => {
          restore();
          this.updated(renamed);
        },
        (error: unknown) => {
          save.disabled = false;
          this.handleProblem(describeProblem(error));
        },
      );
    });
    this.heading.replaceWith(form);
    this.headerTools.hidden = true;
    input.focus();
    input.select();
  }

  private confirmDelete(): void {
    const conversation = this.current;
    if (!conversation) return;
    const confirm = h('button', { type: 'button', class: 'danger' }, 'Delete');
    const cancel = h('button', { type: 'button' }, 'Cancel');
    const dialog = h(
      'dialog',
      { 'aria-labelledby': 'delete-title', 'aria-describedby': 'delete-text' },
      h('h2', { id: 'delete-title' }, 'Delete this conversation?'),
      h('p', { id: 'delete-text' }, `“${conversation.title ?? 'Untitled conversation'}” will no longer be listed or opened.`),
      h('div', { class: 'dialog-buttons' }, cancel, confirm),
    );
    const close = () => {
      dialog.close();
      dialog.remove();
    };
    cancel.addEventListener('click', () => {
      close();
      this.deleteButton.focus();
    });
    dialog.addEventListener('cancel', () => dialog.remove());
    confirm.addEventListener('click', () => {
      confirm.disabled = true;
      this.api.deleteConversation(conversation.id).then(
        () => {
          close();
          this.sidebar.remove(conversation.id);
          if (this.current?.id === conversation.id) this.newChat();
        },
        (error: unknown) => {
          close();
          this.handleProblem(describeProblem(error));
        },
      );
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  }

  private handleProblem(problem: Problem): void {
    if (problem.kind === 'aborted') return;
    if (problem.kind === 'auth') {
      this.signOut(problem.message);
      return;
    }
    this.problemBox.textContent = problem.message;
    this.problemBox.hidden = false;
  }

  private clearProblem(): void {
    this.problemBox.hidden = true;
    this.problemBox.textContent = '';
  }

  private scrollToEnd(): void {
    this.transcript.scrollTop = this.transcript.scrollHeight;
    this.followEnd = true;
  }

  private signOut(message = ''): void {
    for (const turn of this.liveTurns) turn.detach();
    this.liveTurns.clear();
    this.sidebar.dispose();
    window.removeEventListener('hashchange', this.followAddress);
    forgetToken();
    showConversationInAddress(null);
    showLogin(message);
  }
}

function startConsole(token: string): void {
  new ConsoleApp(token);
}

const fromLink = takeTokenFromFragment();
if (fromLink) saveToken(fromLink);
const token = fromLink ?? savedToken();
if (token) startConsole(token);
else showLogin();
