/**
 * One turn on screen: the person's message and the streamed answer. It follows the run's event stream
 * (the OpenAI Responses events), keeps its position in sessionStorage, and resumes with
 * `starting_after` after a dropped connection or a reload.
 */
import { describeProblem, type ConsoleApi, type ConversationItem, type Problem, type ResponseStreamEvent } from './api';
import { h } from './dom';
import { renderMarkdown } from './markdown';
import { dropPending, savePending, type PendingTurn } from './session';

export type TurnStatus = 'sending' | 'queued' | 'in_progress' | 'finished';
export type TurnOutcome = 'completed' | 'incomplete' | 'failed' | 'cancelled';

export interface TurnHooks {
  /** The status changed (the page enables Stop while a turn runs). */
  changed(turn: Turn): void;
  finished(turn: Turn, outcome: TurnOutcome): void;
  /** A problem outside the turn itself (a revoked token, a rate limit) for the page to handle. */
  problem(problem: Problem): void;
  retry(input: string): void;
}

/** Resumes after a dropped stream before giving up on showing the answer live. */
const RESUME_ATTEMPTS = 5;

export class Turn {
  readonly element: HTMLLIElement;
  responseId: string | null = null;
  status: TurnStatus = 'sending';
  private lastSequence = -1;
  private readonly answer: HTMLDivElement;
  private readonly statusLine: HTMLParagraphElement;
  /** Text of each output message by item id; deltas of an item announced before a resume go to the last one. */
  private readonly messages = new Map<string, { text: string; element: HTMLDivElement }>();
  private lastMessageId: string | null = null;
  private renderScheduled = false;
  private readonly abort = new AbortController();

  constructor(
    private readonly api: ConsoleApi,
    readonly conversationId: string,
    readonly input: string,
    private readonly hooks: TurnHooks,
  ) {
    this.statusLine = h('p', { class: 'turn-status', role: 'status' });
    this.answer = h('div', { class: 'answer', 'aria-busy': 'true' });
    this.element = h(
      'li',
      { class: 'turn' },
      h('div', { class: 'message user' }, h('span', { class: 'visually-hidden' }, 'You: '), h('div', { class: 'user-text' }, input)),
      h('div', { class: 'message assistant' }, h('span', { class: 'visually-hidden' }, 'Assistant: '), this.answer, this.statusLine),
    );
    this.showStatus('Sending…');
  }

  get running(): boolean {
    return this.status === 'queued' || this.status === 'in_progress';
  }

  /** Sends the message as a new turn. */
  start(): void {
    void this.follow(() => this.api.startTurn(this.conversationId, this.input, this.abort.signal));
  }

  /** Picks up a turn that was streaming before a reload, after the last event it showed. */
  resume(pending: PendingTurn): void {
    this.responseId = pending.responseId;
    this.lastSequence = pending.lastSequence;
    this.status = 'in_progress';
    if (pending.text) this.appendText('resumed', pending.text);
    this.showStatus('Reconnecting…');
    void this.follow(() => this.api.resumeTurn(pending.responseId, this.lastSequence, this.abort.signal));
  }

  /** Asks the service to cancel the run; the stream then ends with the cancellation. */
  async stop(): Promise<void> {
    if (!this.responseId) return;
    this.showStatus('Stopping…');
    await this.api.cancelTurn(this.responseId);
  }

  /** Stops reading the stream (the run goes on): the page is signing out. */
  detach(): void {
    this.abort.abort();
  }

  private async follow(open: () => Promise<AsyncIterable<ResponseStreamEvent>>): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        const stream = await open();
        for await (const event of stream) {
          if (this.apply(event)) return;
        }
        // The stream ended without its terminal event (a proxy or the server closed it): resume.
      } catch (error) {
        const problem = describeProblem(error);
        if (problem.kind === 'aborted') return;
        const resumable = problem.kind === 'network' && this.responseId !== null && attempt < RESUME_ATTEMPTS;
        if (!resumable) return this.fail(problem);
      }
      if (this.responseId === null || attempt >= RESUME_ATTEMPTS) return this.fail({ kind: 'network', message: 'The answer stream was interrupted.' });
      this.showStatus('Reconnecting…');
      await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
      const responseId = this.responseId;
      open = () => this.api.resumeTurn(responseId, this.lastSequence, this.abort.signal);
    }
  }

  /** Applies one event; true once the turn is over. */
  private apply(event: ResponseStreamEvent): boolean {
    if (event.sequence_number <= this.lastSequence) return false;
    this.lastSequence = event.sequence_number;
    switch (event.type) {
      case 'response.created':
      case 'response.queued':
        this.responseId = event.response.id;
        if (event.response.status === 'queued') this.setStatus('queued', 'Queued: it runs when the answer before it is done.');
        else this.setStatus('in_progress', 'Answering…');
        break;
      case 'response.in_progress':
        // Each attempt of a run starts over: what an earlier attempt showed is replaced.
        this.responseId = event.response.id;
        this.clearOutput();
        this.setStatus('in_progress', 'Answering…');
        break;
      case 'response.output_item.added':
        if (event.item.type === 'message') this.appendText(event.item.id ?? `item-${event.output_index}`, '');
        break;
      case 'response.output_text.delta':
        this.appendText(this.messages.has(event.item_id) ? event.item_id : (this.lastMessageId ?? event.item_id), event.delta);
        break;
      case 'response.output_item.done':
        if (event.item.type === 'function_call') this.answer.append(functionCallView(event.item.name, event.item.arguments));
        break;
      case 'response.completed':
        this.finish('completed');
        return true;
      case 'response.incomplete': {
        const reason = event.response.incomplete_details?.reason;
        this.finish('incomplete', `The answer was cut short${reason ? ` (${reason.replace(/_/g, ' ')})` : ''}.`);
        return true;
      }
      case 'response.failed':
        if ((event.response.status as string) === 'cancelled') {
          this.finish('cancelled', 'Stopped.');
        } else {
          this.fail({ kind: 'other', message: event.response.error?.message ?? 'The answer failed.' });
        }
        return true;
      case 'error':
        this.fail({ kind: 'other', message: event.message });
        return true;
      default:
        break;
    }
    this.remember();
    return false;
  }

  private setStatus(status: TurnStatus, text: string): void {
    this.status = status;
    this.element.dataset.status = status;
    this.showStatus(text);
    this.remember();
    this.hooks.changed(this);
  }

  private showStatus(text: string): void {
    this.statusLine.textContent = text;
    this.statusLine.hidden = text === '';
  }

  private appendText(itemId: string, delta: string): void {
    let message = this.messages.get(itemId);
    if (!message) {
      message = { text: '', element: h('div', { class: 'markdown' }) };
      this.messages.set(itemId, message);
      this.answer.append(message.element);
    }
    this.lastMessageId = itemId;
    message.text += delta;
    this.scheduleRender();
  }

  private clearOutput(): void {
    this.messages.clear();
    this.lastMessageId = null;
    this.answer.replaceChildren();
  }

  /** Markdown is re-rendered at most once a frame, however fast the deltas come. */
  private scheduleRender(): void {
    if (this.renderScheduled) return;
    this.renderScheduled = true;
    requestAnimationFrame(() => this.render());
  }

  private render(): void {
    this.renderScheduled = false;
    for (const message of this.messages.values()) message.element.innerHTML = renderMarkdown(message.text);
    this.element.dispatchEvent(new CustomEvent('turn-rendered', { bubbles: true }));
  }

  private remember(): void {
    if (!this.responseId || this.status === 'finished') return;
    const text = [...this.messages.values()].map((message) => message.text).join('\n\n');
    savePending({ conversationId: this.conversationId, responseId: this.responseId, input: this.input, lastSequence: this.lastSequence, text });
  }

  private finish(outcome: TurnOutcome, note = ''): void {
    this.status = 'finished';
    this.element.dataset.status = outcome;
    this.answer.setAttribute('aria-busy', 'false');
    this.render();
    this.showStatus(note);
    if (this.responseId) dropPending(this.responseId);
    this.hooks.changed(this);
    this.hooks.finished(this, outcome);
  }

  private fail(problem: Problem): void {
    // A rejected token ends the session; anything else (a rate limit, a missing scope) is this turn's to show.
    if (problem.kind === 'auth') this.hooks.problem(problem);
    this.finish('failed');
    const retry = h('button', { type: 'button', class: 'retry' }, 'Retry');
    retry.addEventListener('click', () => {
      this.element.remove();
      this.hooks.retry(this.input);
    });
    this.statusLine.replaceChildren(h('span', { class: 'failure' }, `The answer failed: ${problem.message}`), ' ', retry);
    this.statusLine.setAttribute('role', 'alert');
    this.statusLine.hidden = false;
  }
}

/** A stored transcript item, as the conversation's history shows it. */
export function itemView(item: ConversationItem): HTMLElement | null {
  switch (item.type) {
    case 'message': {
      const text = item.content.map((part) => ('text' in part && typeof part.text === 'string' ? part.text : '')).join('');
      if (item.role === 'user') {
        return h('div', { class: 'message user' }, h('span', { class: 'visually-hidden' }, 'You: '), h('div', { class: 'user-text' }, text));
      }
      const body = h('div', { class: 'markdown' });
      body.innerHTML = renderMarkdown(text);
      return h('div', { class: 'message assistant' }, h('span', { class: 'visually-hidden' }, `${item.role === 'assistant' ? 'Assistant' : item.role}: `), h('div', { class: 'answer' }, body));
    }
    case 'function_call':
      return h('div', { class: 'message assistant' }, functionCallView(item.name, item.arguments));
    case 'function_call_output':
      return h('div', { class: 'message tool' }, h('details', { class: 'tool' }, h('summary', {}, 'Function result'), h('pre', {}, typeof item.output === 'string' ? item.output : JSON.stringify(item.output, null, 2))));
    default:
      return null;
  }
}

function functionCallView(name: string, args: string): HTMLElement {
  let pretty = args;
  try {
    pretty = JSON.stringify(JSON.parse(args), null, 2);
  } catch {
    // Shown as the model sent it.
  }
  return h('details', { class: 'tool' }, h('summary', {}, 'Called ', h('code', {}, name)), h('pre', {}, pretty));
}
