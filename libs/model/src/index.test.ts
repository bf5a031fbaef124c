import { createModelAdapter, DevModelAdapter, OpenAICompatibleAdapter, resolveUpstreamModel } from './index';

describe('createModelAdapter', () => {
  it('uses the development model without a base URL, and the OpenAI-compatible adapter with one', () => {
    const config = { apiKey: 'k', timeoutMs: 1000, devTokenDelayMs: 0 };
    expect(createModelAdapter(config)).toBeInstanceOf(DevModelAdapter);
    expect(createModelAdapter({ ...config, baseUrl: 'http://127.0.0.1:11434/v1' })).toBeInstanceOf(OpenAICompatibleAdapter);
  });
});

describe('resolveUpstreamModel', () => {
  it('maps listed names and passes others through unchanged', () => {
    const map = { fast: 'llama3.1:8b' };
    expect(resolveUpstreamModel('fast', map)).toBe('llama3.1:8b');
    expect(resolveUpstreamModel('gpt-4o', map)).toBe('gpt-4o');
    expect(resolveUpstreamModel('constructor', map)).toBe('constructor');
    expect(resolveUpstreamModel('toString', {})).toBe('toString');
  });
});
