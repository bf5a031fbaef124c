import { DevModelAdapter } from './dev-model';
import { assistant, baseParams, call, collect, output, rejection, request, textDeltas, user } from './test-helpers';
import { ModelError, type ModelEvent } from './types';

const dev = new DevModelAdapter({ tokenDelayMs: 0 });
const last = (events: ModelEvent[]) => events[events.length - 1];

describe('DevModelAdapter', () => {
  it('streams a deterministic first-turn answer word by word, with word-count usage', async () => {
    const events = await collect(dev, request({ instructions: 'Be kind.', items: [user('hello there')] }));
    expect(textDeltas(events)).toEqual(['Turn ', '1. ', 'You ', 'said: ', '"hello ', 'there".']);
    expect(last(events)).toEqual({ type: 'done', finishReason: 'stop', usage: { inputTokens: 4, outputTokens: 6, cachedTokens: 0 } });
    expect(await collect(dev, request({ instructions: 'Be kind.', items: [user('hello there')] }))).toEqual(events);
  });

  it('counts user turns and quotes the latest and the previous user message', async () => {
    const items = [user('first'), assistant('Turn 1. You said: "first".'), user('second one'), assistant('ok'), user('third, with "quotes"')];
    const events = await collect(dev, request({ items, model: 'any-name-at-all' }));
    expect(textDeltas(events).join('')).toBe('Turn 3. You said: "third, with "quotes"". Before that you said: "second one".');
  });

  it('answers even without a user message', async () => {
    const events = await collect(dev, request({ items: [] }));
    expect(textDeltas(events).join('')).toBe('Turn 0. There is no user message yet.');
  });

  it('calls a tool the latest user message asks for', async () => {
    const params = { ...baseParams, tools: [{ type: 'function', name: 'get_time' }, { type: 'function', name: 'get_weather' }] };
    const events = await collect(dev, request({ items: [user('hi'), assistant('hello'), user('please call get_weather for Paris')], params }));
    expect(events).toEqual([
      { type: 'tool_call_delta', index: 0, callId: 'call_dev_2_get_weather', name: 'get_weather', argumentsDelta: '{}' },
      { type: 'done', finishReason: 'tool_calls', usage: { inputTokens: 7, outputTokens: 1, cachedTokens: 0 } },
    ]);
  });

  it('does not call tools that are not offered, are only a prefix match, or when tool_choice is none', async () => {
    const offered = { ...baseParams, tools: [{ type: 'function', name: 'get_weather' }] };
    const cases = [
      request({ items: [user('call get_weather')] }),
      request({ items: [user('call get_weather_v2')], params: offered }),
      request({ items: [user('call get_weather')], params: { ...offered, tool_choice: 'none' } }),
    ];
    for (const req of cases) {
      const events = await collect(dev, req);
      expect(events.some((e) => e.type === 'tool_call_delta')).toBe(false);
      expect(last(events)).toMatchObject({ finishReason: 'stop' });
    }
  });

  it('reports the tool output after a function_call_output', async () => {
    const params = { ...baseParams, tools: [{ type: 'function', name: 'get_weather' }] };
    const items = [user('call get_weather'), call('call_dev_1_get_weather', 'get_weather', '{}'), output('call_dev_1_get_weather', 'sunny, 21 C')];
    const events = await collect(dev, request({ items, params }));
    expect(textDeltas(events).join('')).toBe('Tool call_dev_1_get_weather returned: sunny, 21 C');
    expect(last(events)).toMatchObject({ finishReason: 'stop' });
  });

  it('stops at max_output_tokens with finish reason length', async () => {
    const events = await collect(dev, request({ items: [user('one two three four five')], params: { ...baseParams, max_output_tokens: 3 } }));
    expect(textDeltas(events)).toEqual(['Turn ', '1. ', 'You ']);
    expect(last(events)).toMatchObject({ finishReason: 'length', usage: { outputTokens: 3 } });
  });

  it('waits tokenDelayMs between words', async () => {
    const slow = new DevModelAdapter({ tokenDelayMs: 20 });
    const started = Date.now();
    const events = await collect(slow, request({ items: [user('a b c')] })); // 7 words: 6 gaps
    expect(textDeltas(events)).toHaveLength(7);
    expect(Date.now() - started).toBeGreaterThanOrEqual(6 * 20 - 5);
  });

  it('stops promptly with cancelled when the signal aborts mid-stream', async () => {
    const slow = new DevModelAdapter({ tokenDelayMs: 10_000 });
    const controller = new AbortController();
    const received: string[] = [];
    const started = Date.now();
    const error = await rejection(
      (async () => {
        for await (const event of slow.stream(request({ signal: controller.signal }))) {
          if (event.type === 'text_delta') {
            received.push(event.delta);
            controller.abort();
          }
        }
      })(),
    );
    expect(error).toBeInstanceOf(ModelError);
    expect(error).toMatchObject({ code: 'cancelled', retryable: false });
    expect(received).toEqual(['Turn ']);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('rejects an already-aborted request without output', async () => {
    const controller = new AbortController();
    controller.abort();
    const events: ModelEvent[] = [];
    const error = await rejection(
      (async () => {
        for await (const event of dev.stream(request({ signal: controller.signal }))) events.push(event);
      })(),
    );
    expect(error).toMatchObject({ code: 'cancelled' });
    expect(events).toEqual([]);
  });
});
