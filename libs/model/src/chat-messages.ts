import type {
  ChatCompletionAssistantMessageParam,
  ChatCompletionContentPart,
  ChatCompletionCreateParamsStreaming,
  ChatCompletionFunctionTool,
  ChatCompletionMessageFunctionToolCall,
  ChatCompletionMessageParam,
  ChatCompletionToolChoiceOption,
} from 'openai/resources/chat/completions';
import type { RunParams, StoredItem, StoredMessage } from '@ic/schemas';

/**
 * Converts the replayed history (Responses-style stored items) into Chat Completions messages.
 *
 * - `instructions` become one leading system message.
 * - user/system/developer messages keep their role, except that `developer` is sent as `system`: every
 *   Chat Completions upstream understands `system`, and OpenAI treats it as developer for newer models.
 *   Text-only content is sent as one string (parts joined with "\n"); content with images is sent as parts.
 * - assistant messages: output_text and refusal parts become the assistant's text content.
 * - consecutive function_call items become ONE assistant message with `tool_calls`, merged into the
 *   assistant text message directly before them when there is one.
 * - function_call_output becomes a `tool` message; array outputs are sent as their text parts joined.
 * - the result is then put in the order Chat Completions requires (see `orderToolMessages`).
 */
export function toChatMessages(instructions: string | null, items: readonly StoredItem[]): ChatCompletionMessageParam[] {
  const messages: ChatCompletionMessageParam[] = [];
  if (instructions) messages.push({ role: 'system', content: instructions });
  messages.push(...orderToolMessages(itemMessages(items)));
  return messages;
}

/**
 * Responses items only have to match by `call_id`, in any order (the AI SDK's second step in a
 * conversation sends the user message again before the `function_call_output`; a client may send an
 * output before the call it answers). Chat Completions requires every assistant message with
 * `tool_calls` to be followed directly by one `tool` message per call, and every `tool` message to
 * answer such a call; OpenAI answers anything else with a 400. So:
 * - each call's output (wherever it is) is moved directly after the assistant message holding the
 *   call; messages that stood in between come after the tool messages;
 * - a call with no output anywhere is left out of its assistant message (the message itself is kept
 *   if it has text, dropped otherwise). OpenAI's Responses API refuses such input ("No tool output
 *   found for function call …"); a stored transcript can still hold one (the user moved on without
 *   answering a tool call, or truncation cut the output off), and the model is better served by not
 *   seeing an unanswered call than by a tool result we invented;
 * - an output whose call is absent (cut by truncation, or never made), and a repeated call or output
 *   for a call_id already sent, are left out.
 */
export function orderToolMessages(messages: readonly ChatCompletionMessageParam[]): ChatCompletionMessageParam[] {
  const outputs = new Map<string, ChatCompletionMessageParam>();
  for (const message of messages) {
    if (message.role === 'tool' && !outputs.has(message.tool_call_id)) outputs.set(message.tool_call_id, message);
  }
  const sentCalls = new Set<string>();
  const ordered: ChatCompletionMessageParam[] = [];
  for (const message of messages) {
    if (message.role === 'tool') continue; // placed after its call, or left out
    if (message.role !== 'assistant' || !message.tool_calls?.length) {
      ordered.push(message);
      continue;
    }
    const answered = message.tool_calls.filter((call) => !sentCalls.has(call.id) && outputs.has(call.id));
    for (const call of message.tool_calls) sentCalls.add(call.id);
    const { tool_calls: _calls, ...rest } = message;
    if (answered.length === 0) {
      if (typeof rest.content === 'string' || (Array.isArray(rest.content) && rest.content.length > 0)) ordered.push(rest);
      continue;
    }
    ordered.push({ ...rest, tool_calls: answered });
    for (const call of answered) {
      ordered.push(outputs.get(call.id)!);
      outputs.delete(call.id);
    }
  }
  return ordered;
}

/** One message per item, in item order; consecutive function calls share one assistant message. */
function itemMessages(items: readonly StoredItem[]): ChatCompletionMessageParam[] {
  const messages: ChatCompletionMessageParam[] = [];

  for (const item of items) {
    switch (item.type) {
      case 'message':
        messages.push(fromMessage(item));
        break;
      case 'function_call': {
        const call: ChatCompletionMessageFunctionToolCall = {
          id: item.call_id,
          type: 'function',
          function: { name: item.name, arguments: item.arguments },
        };
        const last = messages[messages.length - 1];
        if (last?.role === 'assistant') {
          last.tool_calls = [...(last.tool_calls ?? []), call];
        } else {
          messages.push({ role: 'assistant', content: null, tool_calls: [call] });
        }
        break;
      }
      case 'function_call_output':
        messages.push({
          role: 'tool',
          tool_call_id: item.call_id,
          content: typeof item.output === 'string' ? item.output : partsText(item.output),
        });
        break;
    }
  }
  return messages;
}

function fromMessage(item: StoredMessage): ChatCompletionMessageParam {
  if (item.role === 'assistant') {
    const message: ChatCompletionAssistantMessageParam = { role: 'assistant', content: partsText(item.content) };
    return message;
  }
  if (item.role === 'system' || item.role === 'developer') {
    // System content may only hold text; images here cannot be expressed and are left out.
    return { role: 'system', content: partsText(item.content) };
  }
  const hasImage = item.content.some((part) => part.type === 'input_image');
  if (!hasImage) return { role: 'user', content: partsText(item.content) };
  const parts: ChatCompletionContentPart[] = [];
  for (const part of item.content) {
    if (part.type === 'input_image' && typeof part.image_url === 'string') {
      const detail = part.detail === 'low' || part.detail === 'high' ? part.detail : 'auto';
      parts.push({ type: 'image_url', image_url: { url: part.image_url, detail } });
    } else {
      const text = partText(part);
      if (text !== null) parts.push({ type: 'text', text });
    }
  }
  return { role: 'user', content: parts };
}

function partText(part: Record<string, unknown>): string | null {
  if (typeof part.text === 'string') return part.text;
  if (typeof part.refusal === 'string') return part.refusal;
  return null;
}

/** The text of content parts (input_text, output_text, refusal) joined with "\n"; other parts are skipped. */
function partsText(parts: ReadonlyArray<Record<string, unknown>>): string {
  return parts
    .map(partText)
    .filter((text): text is string => text !== null)
    .join('\n');
}

/** Responses function tools (`{type:'function', name, description, parameters, strict}`) → Chat Completions tools. */
export function toChatTools(params: Pick<RunParams, 'tools'>): ChatCompletionFunctionTool[] | undefined {
  if (params.tools.length === 0) return undefined;
  return params.tools.map((tool) => {
    const fn: ChatCompletionFunctionTool['function'] = { name: String(tool.name) };
    if (typeof tool.description === 'string') fn.description = tool.description;
    if (isRecord(tool.parameters)) fn.parameters = tool.parameters;
    if (typeof tool.strict === 'boolean') fn.strict = tool.strict;
    return { type: 'function', function: fn };
  });
}

/** Responses `tool_choice` → Chat Completions `tool_choice`; `undefined` for the default ('auto'). */
export function toChatToolChoice(toolChoice: RunParams['tool_choice']): ChatCompletionToolChoiceOption | undefined {
  if (toolChoice === 'none' || toolChoice === 'required') return toolChoice;
  if (typeof toolChoice === 'object' && toolChoice.type === 'function' && typeof toolChoice.name === 'string') {
    return { type: 'function', function: { name: toolChoice.name } };
  }
  return undefined;
}

/** Responses `text.format` → Chat Completions `response_format`; `undefined` for plain text. */
export function toChatResponseFormat(text: RunParams['text']): ChatCompletionCreateParamsStreaming['response_format'] {
  const format = text.format;
  if (!isRecord(format)) return undefined;
  if (format.type === 'json_object') return { type: 'json_object' };
  if (format.type === 'json_schema') {
    const jsonSchema: { name: string; schema?: Record<string, unknown>; description?: string; strict?: boolean } = {
      name: String(format.name),
    };
    if (isRecord(format.schema)) jsonSchema.schema = format.schema;
    if (typeof format.description === 'string') jsonSchema.description = format.description;
    if (typeof format.strict === 'boolean') jsonSchema.strict = format.strict;
    return { type: 'json_schema', json_schema: jsonSchema };
  }
  return undefined;
}

/** Everything but `model`, `messages` and the stream flags; null/default parameters are left out. */
export type ChatRequestOptions = Omit<ChatCompletionCreateParamsStreaming, 'model' | 'messages' | 'stream' | 'stream_options'>;

/**
 * Maps run parameters onto a Chat Completions request. Defaults are omitted rather than sent, so that
 * upstreams which do not know a parameter (local servers often don't) are not bothered with it.
 */
export function toChatRequestOptions(params: RunParams): ChatRequestOptions {
  const options: ChatRequestOptions = {};
  if (params.temperature != null) options.temperature = params.temperature;
  if (params.top_p != null) options.top_p = params.top_p;
  if (params.max_output_tokens != null) options.max_completion_tokens = params.max_output_tokens;

  const tools = toChatTools(params);
  if (tools) {
    options.tools = tools;
    const toolChoice = toChatToolChoice(params.tool_choice);
    if (toolChoice !== undefined) options.tool_choice = toolChoice;
    // Only meaningful with tools; OpenAI rejects it without them.
    if (params.parallel_tool_calls === false) options.parallel_tool_calls = false;
  }

  const responseFormat = toChatResponseFormat(params.text);
  if (responseFormat) options.response_format = responseFormat;
  const verbosity = params.text.verbosity;
  // 'medium' is the default; sending it would trip upstreams that do not know the parameter.
  if (verbosity === 'low' || verbosity === 'high') options.verbosity = verbosity;

  const effort = params.reasoning.effort;
  if (effort === 'minimal' || effort === 'low' || effort === 'medium' || effort === 'high') options.reasoning_effort = effort;

  if (params.user != null) options.user = params.user;
  if (params.safety_identifier != null) options.safety_identifier = params.safety_identifier;
  return options;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
