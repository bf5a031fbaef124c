import { z } from 'zod';

/**
 * Items as clients send them (Responses `input`) and as we store and return them (conversation items).
 * We support the text and function-calling subset; anything else is a 400 naming the item.
 */
const InputText = z.object({ type: z.literal('input_text'), text: z.string() }).passthrough();
const InputImage = z
  .object({
    type: z.literal('input_image'),
    image_url: z.string().nullish(),
    file_id: z.null().optional(),
    detail: z.enum(['auto', 'low', 'high']).default('auto'),
  })
  .strict();
const OutputText = z
  .object({ type: z.literal('output_text'), text: z.string(), annotations: z.array(z.unknown()).default([]), logprobs: z.array(z.unknown()).optional() })
  .passthrough();
const Refusal = z.object({ type: z.literal('refusal'), refusal: z.string() }).strict();

const InputPart = z.discriminatedUnion('type', [InputText, InputImage]).superRefine((part, ctx) => {
  if (part.type === 'input_image' && typeof part.image_url !== 'string') {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'input_image needs image_url (file_id is not supported)', path: ['image_url'] });
  }
});
const AssistantPart = z.discriminatedUnion('type', [OutputText, Refusal, InputText]);

const MessageRole = z.enum(['user', 'assistant', 'system', 'developer']);

export const InputMessage = z
  .object({
    type: z.literal('message').optional(),
    id: z.string().optional(),
    role: MessageRole,
    content: z.union([z.string(), z.array(z.unknown())]),
    status: z.enum(['in_progress', 'completed', 'incomplete']).optional(),
    phase: z.enum(['commentary', 'final_answer']).nullish(),
  })
  .strict()
  .superRefine((message, ctx) => {
    if (typeof message.content === 'string') return;
    const partSchema = message.role === 'assistant' ? AssistantPart : InputPart;
    message.content.forEach((part, index) => {
      const parsed = partSchema.safeParse(part);
      if (!parsed.success) {
        for (const issue of parsed.error.issues) ctx.addIssue({ ...issue, path: ['content', index, ...issue.path] });
      }
    });
  });

export const FunctionCallItem = z
  .object({
    type: z.literal('function_call'),
    id: z.string().optional(),
    call_id: z.string().min(1),
    name: z.string().min(1),
    arguments: z.string(),
    status: z.enum(['in_progress', 'completed', 'incomplete']).optional(),
  })
  .strict();

export const FunctionCallOutputItem = z
  .object({
    type: z.literal('function_call_output'),
    id: z.string().nullish(),
    call_id: z.string().min(1),
    output: z.union([z.string(), z.array(z.union([InputText, InputImage]))]),
    status: z.enum(['in_progress', 'completed', 'incomplete']).nullish(),
  })
  .strict();

/**
 * A reference to an item that already exists (OpenAI's `ItemReferenceParam`): `type` may be left out or
 * null. The AI SDK sends earlier assistant turns this way when `store` is on (its default).
 */
export const ItemReferenceItem = z
  .object({ type: z.literal('item_reference').nullish(), id: z.string().min(1) })
  .strict();

export const SUPPORTED_INPUT_ITEM_TYPES = ['message', 'function_call', 'function_call_output', 'item_reference'] as const;

/** An item's type: `message` when absent, except that an object with an `id` and no `role` is an item reference. */
function inputItemType(item: Record<string, unknown>): string {
  if (item.type === undefined || item.type === null) return !('role' in item) && 'id' in item ? 'item_reference' : 'message';
  return String(item.type);
}

export const InputItem = z.unknown().superRefine((value, ctx) => {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: 'each input item must be an object' });
    return;
  }
  const type = inputItemType(value as Record<string, unknown>);
  const schema =
    type === 'message'
      ? InputMessage
      : type === 'function_call'
        ? FunctionCallItem
        : type === 'function_call_output'
          ? FunctionCallOutputItem
          : type === 'item_reference'
            ? ItemReferenceItem
            : null;
  if (!schema) {
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      path: ['type'],
      message: `Input items of type '${String(type)}' are not supported; use ${SUPPORTED_INPUT_ITEM_TYPES.join(', ')}.`,
    });
    return;
  }
  const parsed = schema.safeParse(value);
  if (!parsed.success) for (const issue of parsed.error.issues) ctx.addIssue(issue);
});

/** The stored form of an item, without its id (the id is derived from run and position). */
export type StoredMessage = {
  type: 'message';
  role: 'user' | 'assistant' | 'system' | 'developer';
  status: 'completed' | 'incomplete' | 'in_progress';
  content: Array<Record<string, unknown> & { type: string }>;
};
export type StoredFunctionCall = {
  type: 'function_call';
  call_id: string;
  name: string;
  arguments: string;
  status: 'completed' | 'incomplete' | 'in_progress';
};
export type StoredFunctionCallOutput = {
  type: 'function_call_output';
  call_id: string;
  output: string | Array<Record<string, unknown>>;
  status: 'completed' | 'incomplete' | 'in_progress';
};
export type StoredItem = StoredMessage | StoredFunctionCall | StoredFunctionCallOutput;
export const StoredItemBody = z.custom<StoredItem>(
  (value) => typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string',
  'stored item body must be an object with a type',
);

/** An input item that names an existing item; resolved to that item's body before anything is stored. */
export type ItemReference = { type: 'item_reference'; id: string };

/**
 * Normalises validated input into the stored form: string content becomes a single text part
 * (`input_text`, or `output_text` for assistant turns), client-sent ids are dropped (ours are derived).
 * Item references are kept as references: resolving them needs the database (TurnsService does it).
 */
export function normaliseInput(input: string | unknown[]): Array<StoredItem | ItemReference> {
  if (typeof input === 'string') {
    return [{ type: 'message', role: 'user', status: 'completed', content: [{ type: 'input_text', text: input }] }];
  }
  return input.map((raw): StoredItem | ItemReference => {
    const item = raw as Record<string, unknown>;
    const type = inputItemType(item);
    if (type === 'item_reference') return { type, id: ItemReferenceItem.parse(item).id };
    if (type === 'function_call') {
      const call = FunctionCallItem.parse(item);
      return { type, call_id: call.call_id, name: call.name, arguments: call.arguments, status: 'completed' };
    }
    if (type === 'function_call_output') {
      const output = FunctionCallOutputItem.parse(item);
      return { type, call_id: output.call_id, output: output.output, status: 'completed' };
    }
    const message = InputMessage.parse(item);
    const content =
      typeof message.content === 'string'
        ? [message.role === 'assistant' ? { type: 'output_text', text: message.content, annotations: [] } : { type: 'input_text', text: message.content }]
        : (message.content as StoredMessage['content']).map((part) =>
            part.type === 'output_text' ? { annotations: [], ...part } : part,
          );
    return { type: 'message', role: message.role, status: 'completed', content };
  });
}

/** The text of a message's text parts, joined; used for titles and the development model. */
export function messageText(item: StoredItem): string {
  if (item.type !== 'message') return '';
  return item.content
    .map((part) => (typeof part.text === 'string' ? part.text : typeof part.refusal === 'string' ? part.refusal : ''))
    .filter((text) => text.length > 0)
    .join('\n');
}
