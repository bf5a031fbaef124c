import { messageText, type StoredItem } from '@ic/schemas';
import { ModelError, type ModelAdapter, type ModelEvent, type ModelRequest } from './types';
import { abortableDelay } from './abortable-delay';

export interface DevModelConfig {
  /** Milliseconds between streamed words (DEV_MODEL_TOKEN_DELAY_MS); 0 streams as fast as the consumer reads. */
  tokenDelayMs: number;
}

/**
 * The built-in development model used when no upstream is configured. Deterministic, answers to any
 * model name, and visibly uses the replayed history so conversation state can be checked end to end:
 *
 * - after a function_call_output: `Tool <call_id> returned: <output>`
 * - when tools are offered (and tool_choice is not 'none') and the latest user message says
 *   `call <toolname>`: a call to that tool with arguments `{}` (finish reason tool_calls)
 * - otherwise: `Turn N. You said: "<latest>". Before that you said: "<previous>".`
 *
 * Text streams word by word; `max_output_tokens` truncates it (finish reason length). Usage counts words.
 */
export class DevModelAdapter implements ModelAdapter {
  readonly name = 'dev';
  private readonly tokenDelayMs: number;

  constructor(config: DevModelConfig) {
    this.tokenDelayMs = config.tokenDelayMs;
  }

  async *stream(request: ModelRequest): AsyncGenerator<ModelEvent> {
    const { signal, items } = request;
    if (signal.aborted) throw cancelled();
    const inputTokens = countWords(request.instructions ?? '') + items.reduce((sum, item) => sum + countWords(itemText(item)), 0);

    const toolName = requestedTool(request);
    if (toolName !== null) {
      await this.pause(signal);
      const userTurns = items.filter(isUserMessage).length;
      yield { type: 'tool_call_delta', index: 0, callId: `call_dev_${userTurns}_${toolName}`, name: toolName, argumentsDelta: '{}' };
      yield { type: 'done', finishReason: 'tool_calls', usage: { inputTokens, outputTokens: 1, cachedTokens: 0 } };
      return;
    }

    const words = devReply(items).match(/\S+\s*/g) ?? [];
    const limit = request.params.max_output_tokens;
    const truncated = limit != null && words.length > limit;
    const emitted = truncated ? words.slice(0, limit) : words;
    for (const [index, word] of emitted.entries()) {
      if (index > 0) await this.pause(signal);
      if (signal.aborted) throw cancelled();
      yield { type: 'text_delta', delta: word };
    }
    if (signal.aborted) throw cancelled();
    yield {
      type: 'done',
      finishReason: truncated ? 'length' : 'stop',
      usage: { inputTokens, outputTokens: emitted.length, cachedTokens: 0 },
    };
  }

  /** Waits `tokenDelayMs`, throwing ModelError('cancelled') as soon as the signal aborts. */
  private pause(signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.reject(cancelled());
    if (this.tokenDelayMs <= 0) return Promise.resolve();
    return abortableDelay(this.tokenDelayMs, signal, cancelled);
  }
}

/** The text the development model answers with for this history (no tool call). */
export function devReply(items: readonly StoredItem[]): string {
  const last = items[items.length - 1];
  if (last?.type === 'function_call_output') return `Tool ${last.call_id} returned: ${outputText(last.output)}`;
  const userMessages = items.filter(isUserMessage);
  const latest = userMessages[userMessages.length - 1];
  if (!latest) return 'Turn 0. There is no user message yet.';
  let reply = `Turn ${userMessages.length}. You said: "${messageText(latest)}".`;
  const previous = userMessages[userMessages.length - 2];
  if (previous) reply += ` Before that you said: "${messageText(previous)}".`;
  return reply;
}

/** The offered tool the latest user message asks for with "call <name>", if any. */
function requestedTool(request: ModelRequest): string | null {
  if (request.params.tool_choice === 'none') return null;
  const last = request.items[request.items.length - 1];
  if (last?.type === 'function_call_output') return null;
  const userMessages = request.items.filter(isUserMessage);
  const latest = userMessages[userMessages.length - 1];
  if (!latest) return null;
  const text = messageText(latest);
  for (const tool of request.params.tools) {
    const name = tool.name;
    if (typeof name !== 'string') continue;
    const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    if (new RegExp(`\\bcall\\s+${escaped}(?![A-Za-z0-9_-])`, 'i').test(text)) return name;
  }
  return null;
}

function isUserMessage(item: StoredItem): boolean {
  return item.type === 'message' && item.role === 'user';
}

function outputText(output: string | Array<Record<string, unknown>>): string {
  if (typeof output === 'string') return output;
  return output
    .map((part) => (typeof part.text === 'string' ? part.text : ''))
    .filter((text) => text.length > 0)
    .join('\n');
}

function itemText(item: StoredItem): string {
  if (item.type === 'message') return messageText(item);
  if (item.type === 'function_call') return `${item.name} ${item.arguments}`;
  return outputText(item.output);
}

function countWords(text: string): number {
  return text.match(/\S+/g)?.length ?? 0;
}

function cancelled(): ModelError {
  return new ModelError('The model call was cancelled.', 'cancelled', false);
}
