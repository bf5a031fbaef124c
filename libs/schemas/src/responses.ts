import { z } from 'zod';
import { Metadata } from './api';
import { InputItem } from './items';

/**
 * `POST /v1/responses`. Strict: an unknown parameter is a 400 naming it, and parameters we know but do
 * not support are rejected by `UNSUPPORTED_RESPONSE_PARAMS` rather than silently ignored.
 */
const FunctionTool = z
  .object({
    type: z.literal('function'),
    name: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'function names may use letters, digits, _ and -, up to 64 characters'),
    description: z.string().nullish(),
    parameters: z.record(z.unknown()).nullish(),
    strict: z.boolean().nullish(),
  })
  .strict();

const Tool = z.unknown().superRefine((value, ctx) => {
  const type = (value as { type?: unknown } | null)?.type;
  if (type !== 'function') {
    ctx.addIssue({ code: z.ZodIssueCode.custom, path: ['type'], message: `Tools of type '${String(type)}' are not supported; only function tools are.` });
    return;
  }
  const parsed = FunctionTool.safeParse(value);
  if (!parsed.success) for (const issue of parsed.error.issues) ctx.addIssue(issue);
});

const ToolChoice = z.union([
  z.enum(['none', 'auto', 'required']),
  z.object({ type: z.literal('function'), name: z.string().min(1) }).strict(),
]);

const TextFormat = z.discriminatedUnion('type', [
  z.object({ type: z.literal('text') }).strict(),
  z.object({ type: z.literal('json_object') }).strict(),
  z
    .object({
      type: z.literal('json_schema'),
      name: z.string().min(1).max(64),
      schema: z.record(z.unknown()),
      description: z.string().nullish(),
      strict: z.boolean().nullish(),
    })
    .strict(),
]);

const ConversationRef = z.union([z.string().min(1), z.object({ id: z.string().min(1) }).strict()]);

export const CreateResponseBody = z
  .object({
    model: z.string().max(256).nullish(),
    input: z.union([z.string(), z.array(InputItem).min(1, 'input must hold at least one item')]),
    instructions: z.string().nullish(),
    conversation: ConversationRef.nullish(),
    previous_response_id: z.string().nullish(),
    stream: z.boolean().nullish(),
    stream_options: z.object({ include_obfuscation: z.boolean().nullish() }).strict().nullish(),
    background: z.boolean().nullish(),
    store: z.boolean().nullish(),
    metadata: Metadata.nullish(),
    temperature: z.number().min(0).max(2).nullish(),
    top_p: z.number().min(0).max(1).nullish(),
    max_output_tokens: z.number().int().min(16, 'max_output_tokens must be at least 16').nullish(),
    tools: z.array(Tool).max(128).nullish(),
    tool_choice: ToolChoice.nullish(),
    parallel_tool_calls: z.boolean().nullish(),
    text: z.object({ format: TextFormat.optional(), verbosity: z.enum(['low', 'medium', 'high']).nullish() }).strict().nullish(),
    reasoning: z
      .object({ effort: z.enum(['minimal', 'low', 'medium', 'high']).nullish(), summary: z.null().optional(), generate_summary: z.null().optional() })
      .strict()
      .nullish(),
    user: z.string().max(256).nullish(),
    safety_identifier: z.string().max(64).nullish(),
    include: z.array(z.string()).nullish(),
    truncation: z.enum(['disabled', 'auto']).nullish(),
    service_tier: z.string().nullish(),
    top_logprobs: z.number().int().nullish(),
    max_tool_calls: z.number().int().nullish(),
    prompt: z.unknown().optional(),
    prompt_cache_key: z.string().nullish(),
  })
  .strict();
export type CreateResponseBody = z.infer<typeof CreateResponseBody>;

/** Parameters OpenAI defines that this service does not implement, with the reason given to the caller. */
export const UNSUPPORTED_RESPONSE_PARAMS: Array<{ param: keyof CreateResponseBody; when: (body: CreateResponseBody) => boolean; why: string }> = [
  { param: 'top_logprobs', when: (b) => (b.top_logprobs ?? 0) > 0, why: 'top_logprobs is not supported.' },
  { param: 'max_tool_calls', when: (b) => b.max_tool_calls != null, why: 'max_tool_calls applies to built-in tools, which are not supported.' },
  { param: 'prompt', when: (b) => b.prompt != null, why: 'stored prompts are not supported; send instructions and input.' },
  { param: 'service_tier', when: (b) => b.service_tier != null && !['auto', 'default'].includes(b.service_tier), why: "only service_tier 'auto' or 'default' is supported." },
  { param: 'store', when: (b) => b.store === false && b.conversation != null, why: 'store: false cannot be combined with conversation: a conversation turn is always stored.' },
  { param: 'background', when: (b) => b.background === true && b.store === false, why: 'background responses must be stored.' },
];

/** The request parameters echoed on the Response object (kept on the run as `params`). */
export const RunParams = z
  .object({
    temperature: z.number().nullable(),
    top_p: z.number().nullable(),
    max_output_tokens: z.number().nullable(),
    tools: z.array(z.record(z.unknown())),
    tool_choice: z.union([z.string(), z.record(z.unknown())]),
    parallel_tool_calls: z.boolean(),
    text: z.record(z.unknown()),
    reasoning: z.record(z.unknown()),
    metadata: z.record(z.string()),
    user: z.string().nullable(),
    safety_identifier: z.string().nullable(),
    store: z.boolean(),
    background: z.boolean(),
    truncation: z.string(),
  })
  .strict();
export type RunParams = z.infer<typeof RunParams>;

/**
 * The parameters of a plain turn: what an empty request means. Sampling parameters stay null unless the
 * caller set them, so the upstream uses its own defaults (some models refuse an explicit temperature).
 */
export function defaultRunParams(overrides: Partial<RunParams> = {}): RunParams {
  return {
    temperature: null,
    top_p: null,
    max_output_tokens: null,
    tools: [],
    tool_choice: 'auto',
    parallel_tool_calls: true,
    text: { format: { type: 'text' }, verbosity: 'medium' },
    reasoning: { effort: null, summary: null },
    metadata: {},
    user: null,
    safety_identifier: null,
    store: true,
    background: false,
    truncation: 'disabled',
    ...overrides,
  };
}

export const RunStatus = z.enum(['queued', 'in_progress', 'completed', 'incomplete', 'failed', 'cancelled']);
export type RunStatus = z.infer<typeof RunStatus>;
export const TERMINAL_STATUSES: readonly RunStatus[] = ['completed', 'incomplete', 'failed', 'cancelled'];

export const Usage = z.object({
  input_tokens: z.number().int(),
  input_tokens_details: z.object({ cached_tokens: z.number().int() }).passthrough(),
  output_tokens: z.number().int(),
  output_tokens_details: z.object({ reasoning_tokens: z.number().int() }).passthrough(),
  total_tokens: z.number().int(),
});
export type Usage = z.infer<typeof Usage>;

export const RunError = z.object({ code: z.string(), message: z.string() });
export type RunError = z.infer<typeof RunError>;

export const GetResponseQuery = z
  .object({
    stream: z.enum(['true', 'false']).optional(),
    /** An event sequence number (query strings only: `1e3`, `0x10` or 20 digits are refused, not coerced). */
    starting_after: z
      .string()
      .regex(/^(-1|\d{1,9})$/, 'starting_after must be an event sequence number: an integer from -1 to 999999999')
      .transform(Number)
      .optional(),
    include: z.union([z.string(), z.array(z.string())]).optional(),
    'include[]': z.union([z.string(), z.array(z.string())]).optional(),
    include_obfuscation: z.enum(['true', 'false']).optional(),
  })
  .strict();
