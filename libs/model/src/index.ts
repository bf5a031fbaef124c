import { DevModelAdapter } from './dev-model';
import { OpenAICompatibleAdapter } from './openai-compatible';
import type { ModelAdapter } from './types';

export * from './types';
export * from './chat-messages';
export * from './openai-compatible';
export * from './dev-model';

export interface ModelAdapterConfig {
  /** MODEL_BASE_URL; absent means the built-in development model. */
  baseUrl?: string;
  /** MODEL_API_KEY */
  apiKey: string;
  /** MODEL_TIMEOUT_MS */
  timeoutMs: number;
  /** DEV_MODEL_TOKEN_DELAY_MS */
  devTokenDelayMs: number;
}

/** The adapter the environment asks for: an OpenAI-compatible upstream, or the development model. */
export function createModelAdapter(config: ModelAdapterConfig): ModelAdapter {
  if (!config.baseUrl) return new DevModelAdapter({ tokenDelayMs: config.devTokenDelayMs });
  return new OpenAICompatibleAdapter({ baseURL: config.baseUrl, apiKey: config.apiKey, timeoutMs: config.timeoutMs });
}

/** The upstream model name for a public one (MODEL_MAP lookup); unmapped names pass through unchanged. */
export function resolveUpstreamModel(name: string, modelMap: Readonly<Record<string, string>>): string {
  return Object.hasOwn(modelMap, name) ? (modelMap[name] as string) : name;
}
