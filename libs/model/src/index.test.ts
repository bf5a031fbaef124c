import { createModelAdapter, describeModelAdapter, DevModelAdapter, OpenAICompatibleAdapter, resolveUpstreamModel } from './index';

describe('createModelAdapter', () => {
  const config = { apiKey: 'k', timeoutMs: 1000, devTokenDelayMs: 0 };

  it('uses the adapter asked for, never the development model by default', () => {
    expect(createModelAdapter({ ...config, adapter: 'development' })).toBeInstanceOf(DevModelAdapter);
    expect(createModelAdapter({ ...config, adapter: 'openai-compatible', baseUrl: 'http://127.0.0.1:11434/v1' })).toBeInstanceOf(OpenAICompatibleAdapter);
    expect(() => createModelAdapter({ ...config, adapter: 'openai-compatible' })).toThrow(/MODEL_BASE_URL is required/);
  });

  it('describes the adapter for the boot log without credentials', () => {
    expect(describeModelAdapter({ adapter: 'development' })).toEqual({ modelAdapter: 'development' });
    expect(describeModelAdapter({ adapter: 'openai-compatible', baseUrl: 'https://user:secret@llm.example.com/v1?key=abc' })).toEqual({
      modelAdapter: 'openai-compatible',
      modelBaseUrl: 'https://llm.example.com/v1',
    });
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
