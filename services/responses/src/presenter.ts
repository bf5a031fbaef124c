import { presentItem, toUnixSeconds, type ItemRow, type RunRow, type StoredItem } from '@ic/schemas';

export type OutputItem = ReturnType<typeof presentItem>;

/** The OpenAI Response object for a run: every field the client requires, `output` always an array. */
export function presentResponse(run: RunRow, output: readonly OutputItem[]) {
  const { params } = run;
  return {
    id: run.id,
    object: 'response' as const,
    created_at: toUnixSeconds(run.created_at),
    status: run.status,
    background: params.background,
    completed_at: run.completed_at !== null && run.status === 'completed' ? toUnixSeconds(run.completed_at) : null,
    conversation: run.conversation_id ? { id: run.conversation_id } : null,
    error: run.error,
    incomplete_details: run.incomplete_details,
    instructions: run.instructions,
    max_output_tokens: params.max_output_tokens,
    max_tool_calls: null,
    metadata: params.metadata,
    model: run.model,
    output: [...output],
    parallel_tool_calls: params.parallel_tool_calls,
    previous_response_id: run.previous_response_id,
    prompt_cache_key: null,
    reasoning: { effort: null, summary: null, ...params.reasoning },
    safety_identifier: params.safety_identifier,
    service_tier: 'default',
    store: params.store,
    temperature: params.temperature ?? 1,
    text: { format: { type: 'text' }, verbosity: 'medium', ...params.text },
    tool_choice: params.tool_choice,
    tools: params.tools,
    top_logprobs: 0,
    top_p: params.top_p ?? 1,
    truncation: params.truncation,
    usage: run.usage,
    user: params.user,
  };
}
export type ResponseObject = ReturnType<typeof presentResponse>;

export function presentOutputItems(rows: readonly Pick<ItemRow, 'id' | 'body' | 'direction'>[]): OutputItem[] {
  return rows.filter((row) => row.direction === 'output').map(presentItem);
}

export function outputItemWithId(id: string, body: StoredItem): OutputItem {
  return presentItem({ id, body });
}
