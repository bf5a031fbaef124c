import { createConversationsRepo, createItemsRepo, type DatabasePool } from '@ic/db';
import type { ModelAdapter } from '@ic/model';
import type { JobPayload } from '@ic/schemas';
import { defaultRunParams, messageText } from '@ic/schemas';
import type { Logger } from '@ic/telemetry';
import { cleanModelTitle, titleFromMessage } from './title';

export type TitlerMode = 'message' | 'model';

export interface TitlerDeps {
  pool: DatabasePool;
  logger: Logger;
  mode: TitlerMode;
  /** Used in `model` mode; the message-derived title is the fallback whenever the model fails. */
  model?: ModelAdapter;
  titleModel?: string;
  modelTimeoutMs?: number;
}

/**
 * Sets a conversation's title from its first user message. The write is conditional on no title
 * having been chosen (title_source IS NULL), so a user's rename always wins, before or during this job.
 */
export function createTitleHandler(deps: TitlerDeps) {
  return async ({ conversationId }: JobPayload<'titler.generate.v1'>): Promise<void> => {
    // One read: nothing comes back once a title was chosen (or the conversation is gone).
    const first = await createItemsRepo(deps.pool).firstUserMessageWhileUntitled(conversationId);
    if (!first) return;
    const text = messageText(first.body);
    let title = titleFromMessage(text);
    if (title && deps.mode === 'model' && deps.model) title = (await askModel(deps, text)) ?? title;
    if (!title) return;
    const updated = await createConversationsRepo(deps.pool).setAutoTitle(conversationId, title);
    deps.logger.debug({ conversationId, updated: updated !== null }, 'title job done');
  };
}

async function askModel(deps: TitlerDeps, text: string): Promise<string | null> {
  const signal = AbortSignal.timeout(deps.modelTimeoutMs ?? 15000);
  try {
    let answer = '';
    for await (const event of deps.model!.stream({
      model: deps.titleModel ?? 'default',
      instructions: 'Write a short title (at most six words) for a conversation that starts with the user message below. Reply with the title only.',
      items: [{ type: 'message', role: 'user', status: 'completed', content: [{ type: 'input_text', text: text.slice(0, 2000) }] }],
      params: defaultRunParams({ temperature: 0.2, max_output_tokens: 32, tool_choice: 'none', parallel_tool_calls: false, store: false }),
      signal,
    })) {
      if (event.type === 'text_delta') answer += event.delta;
    }
    return cleanModelTitle(answer);
  } catch (error) {
    deps.logger.warn({ err: error }, 'model title failed; using the first message');
    return null;
  }
}
