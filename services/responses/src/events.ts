import type { ModelEvent } from '@ic/model';
import type { StreamEvent } from '@ic/queue';
import { outputItemId, type RunStatus, type StoredFunctionCall, type StoredItem, type StoredMessage } from '@ic/schemas';
import type { ResponseObject } from './presenter';

type PendingEvent = { type: string; payload: Record<string, unknown> };

const isDelta = (type: string) => type === 'response.output_text.delta' || type === 'response.function_call_arguments.delta';

/**
 * Buffers a run's events until the caller flushes them, then numbers them. Consecutive deltas of the
 * same item are merged while they wait (fewer, larger `…delta` events, the same concatenated text), so
 * a flush window turns many model tokens into one event and one Redis write.
 */
export class EventSequencer {
  private pending: PendingEvent[] = [];
  private pendingDeltaChars = 0;

  constructor(private nextSequence: number) {}

  /** The sequence number the next event taken will get. */
  get next(): number {
    return this.nextSequence;
  }

  get size(): number {
    return this.pending.length;
  }

  /** Characters of delta text waiting to be flushed. */
  get deltaChars(): number {
    return this.pendingDeltaChars;
  }

  /** Whether anything other than deltas is waiting (a new item, a …done event, a lifecycle event). */
  get holdsStructure(): boolean {
    return this.pending.some((event) => !isDelta(event.type));
  }

  emit(type: string, payload: Record<string, unknown>): void {
    if (isDelta(type)) {
      const delta = payload.delta as string;
      this.pendingDeltaChars += delta.length;
      const last = this.pending[this.pending.length - 1];
      if (last && last.type === type && last.payload.item_id === payload.item_id && last.payload.content_index === payload.content_index) {
        last.payload = { ...last.payload, delta: (last.payload.delta as string) + delta };
        return;
      }
    }
    this.pending.push({ type, payload });
  }

  take(): StreamEvent[] {
    const events = this.pending.map(({ type, payload }) => ({ type, sequence_number: this.nextSequence++, ...payload }) as StreamEvent);
    this.pending = [];
    this.pendingDeltaChars = 0;
    return events;
  }

  /** Numbers what is taken next from `next` on (an attempt learns where its log ends when its first write lands). */
  continueAt(next: number): void {
    this.nextSequence = next;
  }

  /** Puts back events taken but not written (the append failed), ahead of anything emitted since. */
  giveBack(events: readonly StreamEvent[]): void {
    if (events.length === 0) return;
    this.nextSequence = events[0]!.sequence_number;
    const restored = events.map(({ type, sequence_number: _sequence, ...payload }) => ({ type, payload }));
    const later = this.pending;
    this.pending = [];
    this.pendingDeltaChars = 0;
    for (const event of [...restored, ...later]) this.emit(event.type, event.payload);
  }
}

/** The lifecycle event that ends a stream. The SDK knows no `response.cancelled`, so a cancel ends in `response.failed` with status cancelled. */
export function terminalEventType(status: RunStatus): string {
  switch (status) {
    case 'completed':
      return 'response.completed';
    case 'incomplete':
      return 'response.incomplete';
    default:
      return 'response.failed';
  }
}
export const isTerminalEvent = (event: { type: string }) =>
  event.type === 'response.completed' || event.type === 'response.incomplete' || event.type === 'response.failed' || event.type === 'error';

/** The response as a stream shows it while it runs: no output, usage or outcome yet. */
export function inProgressSnapshot(response: ResponseObject) {
  return { ...response, status: 'in_progress' as const, output: [], usage: null, error: null, incomplete_details: null, completed_at: null };
}

/** The events that open and close output items, shared by the live assembler and the log completer. */
const itemEvents = {
  messageAdded(events: EventSequencer, id: string, outputIndex: number) {
    events.emit('response.output_item.added', {
      output_index: outputIndex,
      item: { id, type: 'message', status: 'in_progress', role: 'assistant', content: [] },
    });
    events.emit('response.content_part.added', {
      item_id: id,
      output_index: outputIndex,
      content_index: 0,
      part: { type: 'output_text', text: '', annotations: [], logprobs: [] },
    });
  },
  textDelta(events: EventSequencer, id: string, outputIndex: number, delta: string) {
    events.emit('response.output_text.delta', { item_id: id, output_index: outputIndex, content_index: 0, delta, logprobs: [] });
  },
  messageDone(events: EventSequencer, id: string, outputIndex: number, body: StoredMessage) {
    const text = messageText(body);
    events.emit('response.output_text.done', { item_id: id, output_index: outputIndex, content_index: 0, text, logprobs: [] });
    events.emit('response.content_part.done', { item_id: id, output_index: outputIndex, content_index: 0, part: { type: 'output_text', text, annotations: [], logprobs: [] } });
    events.emit('response.output_item.done', { output_index: outputIndex, item: { id, ...body } });
  },
  callAdded(events: EventSequencer, id: string, outputIndex: number, callId: string, name: string) {
    events.emit('response.output_item.added', {
      output_index: outputIndex,
      item: { id, type: 'function_call', status: 'in_progress', call_id: callId, name, arguments: '' },
    });
  },
  argumentsDelta(events: EventSequencer, id: string, outputIndex: number, delta: string) {
    events.emit('response.function_call_arguments.delta', { item_id: id, output_index: outputIndex, delta });
  },
  callDone(events: EventSequencer, id: string, outputIndex: number, body: StoredFunctionCall) {
    events.emit('response.function_call_arguments.done', { item_id: id, output_index: outputIndex, name: body.name, arguments: body.arguments });
    events.emit('response.output_item.done', { output_index: outputIndex, item: { id, ...body } });
  },
};

function messageText(body: { content?: ReadonlyArray<Record<string, unknown>> }): string {
  return (body.content ?? []).map((part) => (typeof part.text === 'string' ? part.text : '')).join('');
}

type OpenMessage = { kind: 'message'; outputIndex: number; id: string; text: string };
type OpenCall = { kind: 'call'; outputIndex: number; id: string; callId: string; name: string; arguments: string };

/**
 * Turns the model's normalised events into OpenAI's streaming events (output_item.added,
 * content_part.added, output_text.delta…, the …done events) and, at the end, the output items to store.
 */
export class OutputAssembler {
  private readonly outputs: Array<OpenMessage | OpenCall> = [];
  private message: OpenMessage | null = null;
  private readonly calls = new Map<number, OpenCall>();

  constructor(
    private readonly runId: string,
    private readonly events: EventSequencer,
  ) {}

  get producedAnything(): boolean {
    return this.outputs.length > 0;
  }

  accept(event: ModelEvent): void {
    if (event.type === 'text_delta') this.text(event.delta);
    else if (event.type === 'tool_call_delta') this.toolCall(event);
  }

  private openMessage(): OpenMessage {
    if (this.message) return this.message;
    const outputIndex = this.outputs.length;
    const message: OpenMessage = { kind: 'message', outputIndex, id: outputItemId(this.runId, outputIndex), text: '' };
    this.message = message;
    this.outputs.push(message);
    itemEvents.messageAdded(this.events, message.id, outputIndex);
    return message;
  }

  private text(delta: string): void {
    if (delta.length === 0) return;
    this.message = this.openMessage();
    this.message.text += delta;
    itemEvents.textDelta(this.events, this.message.id, this.message.outputIndex, delta);
  }

  private toolCall(event: Extract<ModelEvent, { type: 'tool_call_delta' }>): void {
    let call = this.calls.get(event.index);
    if (!call) {
      const outputIndex = this.outputs.length;
      call = {
        kind: 'call',
        outputIndex,
        id: outputItemId(this.runId, outputIndex),
        callId: event.callId ?? `call_${this.runId.slice(4)}_${event.index}`,
        name: event.name ?? '',
        arguments: '',
      };
      this.calls.set(event.index, call);
      this.outputs.push(call);
      itemEvents.callAdded(this.events, call.id, outputIndex, call.callId, call.name);
    } else if (event.name && !call.name) {
      call.name = event.name;
    }
    if (event.argumentsDelta.length > 0) {
      call.arguments += event.argumentsDelta;
      itemEvents.argumentsDelta(this.events, call.id, call.outputIndex, event.argumentsDelta);
    }
  }

  /**
   * Closes every open item (emitting the …done events) and returns the items to store, in output order.
   * A model that said nothing still gets an (empty) assistant message, so the transcript keeps its turns.
   */
  finish(itemStatus: 'completed' | 'incomplete'): Array<{ id: string; body: StoredItem }> {
    if (this.outputs.length === 0) this.openMessage();
    return this.outputs.map((output) => {
      if (output.kind === 'message') {
        const body: StoredMessage = { type: 'message', role: 'assistant', status: itemStatus, content: [{ type: 'output_text', text: output.text, annotations: [] }] };
        itemEvents.messageDone(this.events, output.id, output.outputIndex, body);
        return { id: output.id, body };
      }
      const body: StoredFunctionCall = { type: 'function_call', call_id: output.callId, name: output.name, arguments: output.arguments, status: itemStatus };
      itemEvents.callDone(this.events, output.id, output.outputIndex, body);
      return { id: output.id, body };
    });
  }
}

type StreamedItem = { id: string; type: string; streamed: string; done: boolean };

/** What a log shows of the attempt it ended with: whether it began (in_progress) and its items so far. */
function lastAttemptInLog(log: readonly StreamEvent[]): { started: boolean; items: Map<number, StreamedItem> } {
  const items = new Map<number, StreamedItem>();
  let start = -1;
  for (let index = log.length - 1; index >= 0; index--) {
    if (log[index]!.type === 'response.in_progress') {
      start = index;
      break;
    }
  }
  if (start < 0) return { started: false, items };
  for (const event of log.slice(start + 1)) {
    const outputIndex = typeof event.output_index === 'number' ? event.output_index : -1;
    if (event.type === 'response.output_item.added') {
      const item = (event.item ?? {}) as { id?: unknown; type?: unknown };
      items.set(outputIndex, { id: String(item.id), type: String(item.type), streamed: '', done: false });
    } else if (isDelta(event.type)) {
      const item = items.get(outputIndex);
      if (item && typeof event.delta === 'string') item.streamed += event.delta;
    } else if (event.type === 'response.output_item.done') {
      const item = items.get(outputIndex);
      if (item) item.done = true;
    }
  }
  return { started: true, items };
}

type PresentedOutput = ResponseObject['output'][number];
const storedText = (output: PresentedOutput): string =>
  output.type === 'function_call' ? String(output.arguments ?? '') : messageText(output as { content?: Array<Record<string, unknown>> });

/**
 * The events that finish a run's log from the response Postgres committed: whatever the log's last
 * attempt has not shown yet of the stored output items (added, the rest of their text, the …done
 * events) and then the terminal event. When the log's items do not match what was stored (they came
 * from another attempt), a `response.in_progress` resets the client's snapshot first and every item
 * is sent whole. Failed and cancelled runs end with the terminal event alone.
 */
export function completeLog(log: readonly StreamEvent[], response: ResponseObject, events: EventSequencer): void {
  if (response.status === 'completed' || response.status === 'incomplete') {
    const lastAttempt = lastAttemptInLog(log);
    const started = lastAttempt.started;
    let items = lastAttempt.items;
    const matches = [...items].every(([outputIndex, item]) => {
      const stored = response.output[outputIndex];
      return stored !== undefined && stored.id === item.id && stored.type === item.type && storedText(stored).startsWith(item.streamed);
    });
    if (!started || !matches) {
      events.emit('response.in_progress', { response: inProgressSnapshot(response) });
      items = new Map();
    }
    response.output.forEach((output, outputIndex) => {
      const shown = items.get(outputIndex);
      if (shown?.done) return;
      const { id: _id, ...body } = output;
      const rest = storedText(output).slice(shown?.streamed.length ?? 0);
      if (output.type === 'function_call') {
        const call = body as unknown as StoredFunctionCall;
        if (!shown) itemEvents.callAdded(events, output.id, outputIndex, call.call_id, call.name);
        if (rest) itemEvents.argumentsDelta(events, output.id, outputIndex, rest);
        itemEvents.callDone(events, output.id, outputIndex, call);
      } else if (output.type === 'message') {
        if (!shown) itemEvents.messageAdded(events, output.id, outputIndex);
        if (rest) itemEvents.textDelta(events, output.id, outputIndex, rest);
        itemEvents.messageDone(events, output.id, outputIndex, body as unknown as StoredMessage);
      } else {
        events.emit('response.output_item.added', { output_index: outputIndex, item: output });
        events.emit('response.output_item.done', { output_index: outputIndex, item: output });
      }
    });
  }
  events.emit(terminalEventType(response.status), { response });
}

/**
 * The full event stream of a finished run, rebuilt from what Postgres holds: used when its live
 * events have expired from Redis, so `GET /v1/responses/{id}?stream=true` works for any stored run.
 */
export function rebuildEvents(response: ResponseObject): StreamEvent[] {
  const sequencer = new EventSequencer(0);
  sequencer.emit('response.created', { response: inProgressSnapshot(response) });
  completeLog([], response, sequencer);
  return sequencer.take();
}
