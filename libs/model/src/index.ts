import { DevModelAdapter } from './dev-model';
import { OpenAICompatibleAdapter } from './openai-compatible';
import type { ModelAdapter } from './types';
import type { UpstreamLimitStore } from '@ic/schemas';
import type { UpstreamHoldPeers } from './upstream-backoff';

export * from './types';
export * from './chat-messages';
export * from './openai-compatible';
export * from './dev-model';
export * from './upstream-backoff';
export * from './abortable-delay';

export type ModelAdapterKind = 'openai-compatible' | 'development';

export interface ModelAdapterConfig {
  /** MODEL_ADAPTER: always an explicit choice; the development model is never a silent fallback. */
  adapter: ModelAdapterKind;
  /** MODEL_BASE_URL; required by the openai-compatible adapter. */
  baseUrl?: string;
  /** MODEL_API_KEY */
  apiKey: string;
  /** MODEL_TIMEOUT_MS */
  timeoutMs: number;
  /** DEV_MODEL_TOKEN_DELAY_MS */
  devTokenDelayMs: number;
  /** MODEL_RATE_LIMIT_PACING (default true): pace calls to the request and token limits the upstream reports. */
  rateLimitPacing?: boolean;
}

/**
 * The adapter the environment asks for: an OpenAI-compatible upstream, or the development model.
 * `peers` (the queue backend's signals) shares the upstream's back-off holds between processes, and
 * `sharedLimits` (the queue backend's upstreamLimits) one mirror of each model's rate limits.
 */
export function createModelAdapter(config: ModelAdapterConfig, deps: { peers?: UpstreamHoldPeers; sharedLimits?: UpstreamLimitStore } = {}): ModelAdapter {
  if (config.adapter === 'development') return new DevModelAdapter({ tokenDelayMs: config.devTokenDelayMs });
  if (!config.baseUrl) throw new Error('MODEL_BASE_URL is required with MODEL_ADAPTER=openai-compatible (or set MODEL_ADAPTER=development).');
  return new OpenAICompatibleAdapter({ baseURL: config.baseUrl, apiKey: config.apiKey, timeoutMs: config.timeoutMs, peers: deps.peers, sharedLimits: deps.sharedLimits, rateLimitPacing: config.rateLimitPacing });
}

/** What to log at boot about the model: the adapter and the upstream without credentials. */
export function describeModelAdapter(config: Pick<ModelAdapterConfig, 'adapter' | 'baseUrl'>): { modelAdapter: ModelAdapterKind; modelBaseUrl?: string } {
  if (config.adapter === 'development' || !config.baseUrl) return { modelAdapter: config.adapter };
  const url = new URL(config.baseUrl);
  url.username = '';
  url.password = '';
  url.search = '';
  return { modelAdapter: config.adapter, modelBaseUrl: url.toString() };
}

/** The upstream model name for a public one (MODEL_MAP lookup); unmapped names pass through unchanged. */
export function resolveUpstreamModel(name: string, modelMap: Readonly<Record<string, string>>): string {
  return Object.hasOwn(modelMap, name) ? (modelMap[name] as string) : name;
}
