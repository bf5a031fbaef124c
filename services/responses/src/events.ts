import type { ModelEvent } from '@ic/model';
import type { StreamEvent } from '@ic/queue';
import { outputItemId, type RunStatus, type StoredFunctionCall, type StoredItem, type StoredMessage } from '@ic/schemas';
import type { ResponseObject } from './presenter';

/** Numbers events from a starting sequence and buffers them until the caller flushes. */
export class EventSequencer {
  private pending: StreamEvent[] = [];

  constructor(private nextSequence: number) {}

  emit(type: string, payload: Record<string, unknown>): StreamEvent {
    const event = { type, sequence_number: this.nextSequence++, ...payload } as StreamEvent;
    this.pending.push(event);
    return event;
  }

  take(): StreamEvent[] {
    const events = this.pending;
    this.pending = [];
    return events;
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
export const isTerminalEvent = (event: StreamEvent) =>
  event.type === 'response.completed' || event.type === 'response.incomplete' || event.type === 'response.failed' || event.type === 'error';

type OpenMessage = { kind: 'message'; outputIndex: number; id: string; text: string };
type OpenCall = { kind: 'call'; outputIndex: number; id: string; callId: string; name: string; arguments: string };

/**
 * Turns the model's normalised events into OpenAI's streaming events (output_item.added,
 * content_part.added, output_text.delta…, the …done events) and, at the end, the output items to store.
 * Used live by the worker and, fed stored items, to rebuild the stream of a run whose events expired.
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
    this.events.emit('response.output_item.added', {
      output_index: outputIndex,
      item: { id: message.id, type: 'message', status: 'in_progress', role: 'assistant', content: [] },
    });
    this.events.emit('response.content_part.added', {
      item_id: message.id,
      output_index: outputIndex,
      content_index: 0,
      part: { type: 'output_text', text: '', annotations: [], logprobs: [] },
    });
    return message;
  }

  private text(delta: string): void {
    if (delta.length === 0) return;
    this.message = this.openMessage();
    this.message.text += delta;
    this.events.emit('response.output_text.delta', {
      item_id: this.message.id,
      output_index: this.message.outputIndex,
      content_index: 0,
      delta,
      logprobs: [],
    });
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
      this.events.emit('response.output_item.added', {
        output_index: outputIndex,
        item: { id: call.id, type: 'function_call', status: 'in_progress', call_id: call.callId, name: call.name, arguments: '' },
      });
    } else if (event.name && !call.name) {
      call.name = event.name;
    }
    if (event.argumentsDelta.length > 0) {
      call.arguments += event.argumentsDelta;
      this.events.emit('response.function_call_arguments.delta', { item_id: call.id, output_index: call.outputIndex, delta: event.argumentsDelta });
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
        const part = { type: 'output_text', text: output.text, annotations: [], logprobs: [] };
        this.events.emit('response.output_text.done', { item_id: output.id, output_index: output.outputIndex, content_index: 0, text: output.text, logprobs: [] });
        this.events.emit('response.content_part.done', { item_id: output.id, output_index: output.outputIndex, content_index: 0, part });
        const body: StoredMessage = { type: 'message', role: 'assistant', status: itemStatus, content: [{ type: 'output_text', text: output.text, annotations: [] }] };
        this.events.emit('response.output_item.done', { output_index: output.outputIndex, item: { id: output.id, ...body } });
        return { id: output.id, body };
      }
      this.events.emit('response.function_call_arguments.done', { item_id: output.id, output_index: output.outputIndex, name: output.name, arguments: output.arguments });
      const body: StoredFunctionCall = { type: 'function_call', call_id: output.callId, name: output.name, arguments: output.arguments, status: itemStatus };
      this.events.emit('response.output_item.done', { output_index: output.outputIndex, item: { id: output.id, ...body } });
      return { id: output.id, body };
    });
  }
}

/**
 * The full event stream of a finished run, rebuilt from what Postgres holds: used when its live
 * events have expired from Redis, so `GET /v1/responses/{id}?stream=true` works for any stored run.
 */
export function rebuildEvents(response: ResponseObject, stored: ReadonlyArray<{ id: string; body: StoredItem }>): StreamEvent[] {
  const sequencer = new EventSequencer(0);
  const snapshot = { ...response, status: 'in_progress', output: [], usage: null, error: null, incomplete_details: null, completed_at: null };
  sequencer.emit('response.created', { response: snapshot });
  sequencer.emit('response.in_progress', { response: snapshot });
  const assembler = new OutputAssembler(response.id, sequencer);
  stored.forEach((item, index) => {
    if (item.body.type === 'message') {
      const text = item.body.content.map((part) => (typeof part.text === 'string' ? part.text : '')).join('');
      assembler.accept({ type: 'text_delta', delta: text });
    } else if (item.body.type === 'function_call') {
      assembler.accept({ type: 'tool_call_delta', index, callId: item.body.call_id, name: item.body.name, argumentsDelta: item.body.arguments });
    }
  });
  if (response.status === 'completed' || response.status === 'incomplete') assembler.finish(response.status === 'completed' ? 'completed' : 'incomplete');
  sequencer.emit(terminalEventType(response.status), { response });
  return sequencer.take();
}
