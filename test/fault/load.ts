/**
 * Client load for the fault suite: one loop per conversation driving turns one after another through
 * the official `openai` client (streaming) or a plain POST (non-streaming, to see the exact status),
 * recording what every client saw. Each turn's input carries a unique marker, so the audit can tell
 * from Postgres whether a turn was committed even when its request got no usable answer.
 */
import { randomBytes } from 'node:crypto';
import OpenAI, { APIConnectionError, APIError } from 'openai';

export type TurnMode = 'stream' | 'sync';

/** A stream event as the client received it (the fields the audit needs). */
export interface SeenEvent {
  type: string;
  sequence_number: number;
  response?: { id?: string; status?: string };
  delta?: string;
}

export interface TurnRecord {
  marker: string;
  conversationId: string;
  mode: TurnMode;
  /** HTTP status of the POST; null when no response arrived (connection error). */
  httpStatus: number | null;
  /** Run id as the client learnt it (response.created, or the JSON body). */
  runId: string | null;
  /** Live stream: every event received, in order. */
  events: SeenEvent[];
  /**
   * How it ended: `eof` is a stream's clean end without a terminal event (a truncated answer);
   * `refused` an error status or no answer at all; null for a non-streaming 200.
   */
  ending: 'terminal' | 'error-event' | 'eof' | 'dropped' | 'refused' | null;
  /** `finalResponse()` of the stream, or the JSON body of a non-streaming 200. */
  final: { id: string; status: string; output_text: string; outputIds: string[] } | null;
  /** Why the client gave up (error message), if it did. */
  failure: string | null;
  /** The client is done with this turn (whatever the outcome). */
  done: boolean;
}

export interface LoadOptions {
  responses: OpenAI;
  /** `http://127.0.0.1:PORT/v1` of the responses API, for plain non-streaming POSTs. */
  responsesURL: string;
  token: string;
  conversationIds: string[];
  /** Which turns stream: every turn, none, or alternating per conversation. */
  modes: 'stream' | 'sync' | 'mixed';
  /** Pause after a refused or failed request before the loop tries again. */
  backoffMs?: number;
}

const TERMINAL = new Set(['response.completed', 'response.incomplete', 'response.failed']);

export class TurnLoad {
  readonly records: TurnRecord[] = [];
  private running = false;
  private loops: Promise<void>[] = [];
  private readonly deltaListeners = new Set<(record: TurnRecord) => void>();

  constructor(private readonly options: LoadOptions) {}

  start(): void {
    this.running = true;
    this.loops = this.options.conversationIds.map((conversationId, index) => this.loop(conversationId, index));
  }

  /** Stops starting new turns and waits for the ones in flight to end. */
  async stop(): Promise<void> {
    this.halt();
    await Promise.all(this.loops);
  }

  /** Stops starting new turns (after a failed scenario, whose processes are being killed). */
  halt(): void {
    this.running = false;
  }

  /** Resolves with the first streaming turn that receives an output_text delta after this call. */
  nextDelta(predicate: (record: TurnRecord) => boolean = () => true): Promise<TurnRecord> {
    return new Promise((resolve) => {
      const listener = (record: TurnRecord) => {
        if (!predicate(record)) return;
        this.deltaListeners.delete(listener);
        resolve(record);
      };
      this.deltaListeners.add(listener);
    });
  }

  /** Resolves once `count` more turns have ended (whatever the outcome). */
  async turnsEnded(count: number, timeoutMs: number): Promise<void> {
    const target = this.ended() + count;
    const deadline = Date.now() + timeoutMs;
    while (this.ended() < target) {
      if (Date.now() > deadline) throw new Error(`Only ${this.ended()} of ${target} turns ended within ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** Turns currently waiting on the server. */
  inFlight(): TurnRecord[] {
    return this.records.filter((record) => !record.done);
  }

  private ended(): number {
    return this.records.filter((record) => record.done).length;
  }

  private async loop(conversationId: string, index: number): Promise<void> {
    let turn = 0;
    while (this.running) {
      const mode: TurnMode = this.options.modes === 'mixed' ? ((turn + index) % 2 === 0 ? 'stream' : 'sync') : this.options.modes;
      turn++;
      const record = await this.runTurn(conversationId, mode);
      if (record.ending === 'refused' && this.running) await new Promise((resolve) => setTimeout(resolve, this.options.backoffMs ?? 250));
    }
  }

  /** One turn, recorded; the loops call it, and so can a scenario that drives a single turn itself. */
  async runTurn(conversationId: string, mode: TurnMode): Promise<TurnRecord> {
    const record: TurnRecord = {
      marker: `fault-turn ${randomBytes(6).toString('hex')}`,
      conversationId,
      mode,
      httpStatus: null,
      runId: null,
      events: [],
      ending: null,
      final: null,
      failure: null,
      done: false,
    };
    this.records.push(record);
    await (mode === 'stream' ? this.streamTurn(record) : this.syncTurn(record));
    record.done = true;
    return record;
  }

  /** A streaming turn through `client.responses.stream(…)`; true when the stream ended with a terminal event. */
  private async streamTurn(record: TurnRecord): Promise<boolean> {
    const stream = this.options.responses.responses.stream({ model: '', conversation: record.conversationId, input: record.marker });
    try {
      for await (const event of stream) {
        const seen = event as unknown as SeenEvent;
        record.httpStatus = 200;
        record.events.push({ type: seen.type, sequence_number: seen.sequence_number, response: seen.response ? { id: seen.response.id, status: seen.response.status } : undefined, delta: seen.delta });
        if (seen.type === 'response.created' && seen.response?.id) record.runId = seen.response.id;
        if (seen.type === 'response.output_text.delta') for (const listener of [...this.deltaListeners]) listener(record);
      }
    } catch (error) {
      record.failure = describe(error);
      if (error instanceof APIConnectionError) record.ending = record.events.length > 0 ? 'dropped' : 'refused';
      else if (error instanceof APIError && error.status !== undefined) {
        record.httpStatus = error.status;
        record.ending = 'refused';
      } else if (error instanceof APIError) record.ending = 'error-event';
      else record.ending = record.events.length > 0 ? 'dropped' : 'refused';
      return false;
    }
    const last = record.events.at(-1);
    record.ending = last && TERMINAL.has(last.type) ? 'terminal' : 'eof';
    try {
      const final = await stream.finalResponse();
      record.final = { id: final.id, status: final.status ?? '', output_text: final.output_text, outputIds: final.output.map((item) => item.id ?? '') };
    } catch (error) {
      record.failure = `finalResponse(): ${describe(error)}`;
    }
    return record.ending === 'terminal';
  }

  /** A non-streaming turn as a plain POST, so the exact status is recorded (the openai client would retry some). */
  private async syncTurn(record: TurnRecord): Promise<boolean> {
    let response: Response;
    try {
      response = await fetch(`${this.options.responsesURL}/responses`, {
        method: 'POST',
        headers: { authorization: `Bearer ${this.options.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: '', conversation: record.conversationId, input: record.marker }),
      });
    } catch (error) {
      record.failure = describe(error);
      record.ending = 'refused';
      return false;
    }
    record.httpStatus = response.status;
    const text = await response.text().catch((error: unknown) => `(body lost: ${describe(error)})`);
    if (response.status !== 200) {
      record.failure = `${response.status} ${text.slice(0, 300)}`;
      record.ending = 'refused';
      return false;
    }
    try {
      const body = JSON.parse(text) as { id: string; status: string; output?: Array<{ id?: string; type: string; content?: Array<{ type: string; text?: string }> }> };
      record.runId = body.id;
      const output = body.output ?? [];
      const outputText = output.flatMap((item) => (item.type === 'message' ? (item.content ?? []) : [])).filter((part) => part.type === 'output_text').map((part) => part.text ?? '').join('');
      record.final = { id: body.id, status: body.status, output_text: outputText, outputIds: output.map((item) => item.id ?? '') };
    } catch (error) {
      record.failure = `unparseable 200 body: ${describe(error)}`;
    }
    return true;
  }
}

function describe(error: unknown): string {
  if (error instanceof APIError) return `${error.constructor.name} ${error.status ?? ''} ${error.message}`.slice(0, 300);
  return error instanceof Error ? `${error.name}: ${error.message}`.slice(0, 300) : String(error);
}
