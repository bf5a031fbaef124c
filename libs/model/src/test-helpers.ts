/** Shared by this library's tests (excluded from the build). */
import { defaultRunParams, type RunParams, type StoredItem } from '@ic/schemas';
import type { ModelAdapter, ModelEvent, ModelRequest } from './types';

import { assistantMessage as assistant, userMessage as user } from '@ic/test-support';

export { assistant, user };

export const call = (callId: string, name: string, args: string): StoredItem => ({
  type: 'function_call',
  call_id: callId,
  name,
  arguments: args,
  status: 'completed',
});

export const output = (callId: string, out: string | Array<Record<string, unknown>>): StoredItem => ({
  type: 'function_call_output',
  call_id: callId,
  output: out,
  status: 'completed',
});

/** Sampling parameters left unset, so requests carry only what a test sets. */
export const baseParams: RunParams = defaultRunParams();

export function request(overrides: Partial<ModelRequest> = {}): ModelRequest {
  return { model: 'fake-model', instructions: null, items: [user('hello')], params: baseParams, signal: new AbortController().signal, ...overrides };
}

/** Every event of a stream, in order. */
export async function collect(adapter: ModelAdapter, req: ModelRequest): Promise<ModelEvent[]> {
  const events: ModelEvent[] = [];
  for await (const event of adapter.stream(req)) events.push(event);
  return events;
}

export const textDeltas = (events: ModelEvent[]): string[] =>
  events.flatMap((event) => (event.type === 'text_delta' ? [event.delta] : []));

/** The error a promise rejects with (fails the test if it resolves). */
export async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected the promise to reject');
}
