/** Shared by the client-library suites: the stack in both queue modes, and readable views of what happened. */
import { startTurnStack, type FakeReply, type TurnStack } from '@ic/test-support';

/** Every suite runs against BullMQ on Redis and against the in-process queue of the embedded stack. */
export const QUEUE_MODES: Array<[string, { inProcessQueue: boolean }]> = [
  ['BullMQ on Redis', { inProcessQueue: false }],
  ['the in-process queue', { inProcessQueue: true }],
];

export const MODEL = 'fake-model';

export function startStack(options: { inProcessQueue: boolean }): Promise<TurnStack> {
  return startTurnStack({ inProcessQueue: options.inProcessQueue });
}

type UpstreamRequest = TurnStack['upstream']['requests'][number];
type UpstreamMessage = UpstreamRequest['messages'][number];

function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content.map((part: { text?: unknown }) => (typeof part.text === 'string' ? part.text : '')).join('');
}

function messageLine(message: UpstreamMessage): string {
  const text = contentText(message.content);
  if (message.role === 'tool') return `tool ${message.tool_call_id}: ${text}`;
  if (message.role === 'assistant' && message.tool_calls?.length) {
    const calls = message.tool_calls.map((call) => (call.type === 'function' ? `${call.function.name}(${call.function.arguments}) ${call.id}` : call.type));
    return `assistant: ${text ? `${text} ` : ''}→ ${calls.join(', ')}`;
  }
  return `${message.role}: ${text}`;
}

/** What the model received in upstream request `index` (0-based, in arrival order), one line per message. */
export function sentToModel(stack: TurnStack, index: number): string[] {
  const request = stack.upstream.requests[index];
  if (!request) throw new Error(`the model received no request #${index} (only ${stack.upstream.requests.length})`);
  return request.messages.map(messageLine);
}

type Item = { type: string; role?: string; content?: unknown; name?: string; arguments?: string; call_id?: string; output?: unknown };

function itemLine(item: Item): string {
  if (item.type === 'message') return `${item.role}: ${contentText(item.content)}`;
  if (item.type === 'function_call') return `function_call ${item.name}(${item.arguments}) ${item.call_id}`;
  if (item.type === 'function_call_output') return `function_call_output ${item.call_id}: ${contentText(item.output)}`;
  return item.type;
}

/** A conversation's stored transcript, oldest first, one line per item. */
export async function transcript(stack: TurnStack, conversationId: string): Promise<string[]> {
  const lines: string[] = [];
  for await (const item of stack.client().conversations.items.list(conversationId, { limit: 100 })) lines.push(itemLine(item as Item));
  return lines;
}

/** The stored input items of a run, one line per item. */
export async function runInput(stack: TurnStack, responseId: string): Promise<string[]> {
  const page = await stack.client().responses.inputItems.list(responseId, { order: 'asc', limit: 100 });
  return page.data.map((item) => itemLine(item as Item));
}

/** A stored run, through the API. */
export function storedRun(stack: TurnStack, responseId: string) {
  return stack.client().responses.retrieve(responseId);
}

/**
 * The fake model's script for a tool round trip: it calls `name` with `args` (call id `callId`) until
 * it has been sent that call's result, which it answers with `answer(result)`.
 */
export function callToolThenAnswer(name: string, args: string, callId: string, answer: (result: string) => string) {
  return (request: UpstreamRequest): FakeReply => {
    const result = request.messages.find((message) => message.role === 'tool' && message.tool_call_id === callId);
    if (result) return answer(contentText(result.content));
    return { toolCalls: [{ name, arguments: args, id: callId }] };
  };
}

/** A fresh conversation, made with the `openai` client as the README shows. */
export async function newConversation(stack: TurnStack): Promise<string> {
  return (await stack.client().conversations.create()).id;
}
