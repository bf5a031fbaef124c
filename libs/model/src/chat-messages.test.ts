import type { RunParams, StoredItem } from '@ic/schemas';
import { toChatMessages, toChatRequestOptions } from './chat-messages';
import { assistant, baseParams, call, output, user } from './test-helpers';


describe('toChatMessages', () => {
  it('puts instructions first as a system message and maps text messages by role', () => {
    expect(toChatMessages('Be brief.', [user('hi'), assistant('hello'), user('how are you?')])).toEqual([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'hi' },
      { role: 'assistant', content: 'hello' },
      { role: 'user', content: 'how are you?' },
    ]);
  });

  it('sends no system message without instructions', () => {
    expect(toChatMessages(null, [user('hi')])).toEqual([{ role: 'user', content: 'hi' }]);
    expect(toChatMessages('', [user('hi')])).toEqual([{ role: 'user', content: 'hi' }]);
  });

  it('joins text parts and sends developer messages as system', () => {
    const items: StoredItem[] = [
      { type: 'message', role: 'developer', status: 'completed', content: [{ type: 'input_text', text: 'Rule one.' }, { type: 'input_text', text: 'Rule two.' }] },
      { type: 'message', role: 'system', status: 'completed', content: [{ type: 'input_text', text: 'Sys.' }] },
      { type: 'message', role: 'user', status: 'completed', content: [{ type: 'input_text', text: 'a' }, { type: 'input_text', text: 'b' }] },
    ];
    expect(toChatMessages(null, items)).toEqual([
      { role: 'system', content: 'Rule one.\nRule two.' },
      { role: 'system', content: 'Sys.' },
      { role: 'user', content: 'a\nb' },
    ]);
  });

  it('sends user messages with images as content parts', () => {
    const items: StoredItem[] = [
      {
        type: 'message',
        role: 'user',
        status: 'completed',
        content: [
          { type: 'input_text', text: 'What is this?' },
          { type: 'input_image', image_url: 'https://example.test/cat.png', detail: 'low' },
          { type: 'input_image', image_url: 'data:image/png;base64,AAAA', detail: 'auto' },
        ],
      },
    ];
    expect(toChatMessages(null, items)).toEqual([
      {
        role: 'user',
        content: [
          { type: 'text', text: 'What is this?' },
          { type: 'image_url', image_url: { url: 'https://example.test/cat.png', detail: 'low' } },
          { type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA', detail: 'auto' } },
        ],
      },
    ]);
  });

  it('sends assistant refusals as assistant content', () => {
    const items: StoredItem[] = [{ type: 'message', role: 'assistant', status: 'completed', content: [{ type: 'refusal', refusal: 'I cannot help with that.' }] }];
    expect(toChatMessages(null, items)).toEqual([{ role: 'assistant', content: 'I cannot help with that.' }]);
  });

  it('round-trips a tool-calling turn: one assistant message with all calls, merged into the text before it, then tool messages', () => {
    const items = [
      user('Weather in Paris and time in Tokyo?'),
      assistant('Let me check.'),
      call('call_a', 'get_weather', '{"city":"Paris"}'),
      call('call_b', 'get_time', '{"city":"Tokyo"}'),
      output('call_a', 'sunny'),
      output('call_b', [{ type: 'input_text', text: '09:00' }, { type: 'input_text', text: 'JST' }]),
      assistant('Sunny in Paris; 09:00 in Tokyo.'),
    ];
    expect(toChatMessages('sys', items)).toEqual([
      { role: 'system', content: 'sys' },
      { role: 'user', content: 'Weather in Paris and time in Tokyo?' },
      {
        role: 'assistant',
        content: 'Let me check.',
        tool_calls: [
          { id: 'call_a', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } },
          { id: 'call_b', type: 'function', function: { name: 'get_time', arguments: '{"city":"Tokyo"}' } },
        ],
      },
      { role: 'tool', tool_call_id: 'call_a', content: 'sunny' },
      { role: 'tool', tool_call_id: 'call_b', content: '09:00\nJST' },
      { role: 'assistant', content: 'Sunny in Paris; 09:00 in Tokyo.' },
    ]);
  });

  it('starts a new assistant message for calls that do not follow assistant text', () => {
    const items = [user('go'), call('c1', 'f', '{}'), call('c2', 'g', '{}'), output('c1', 'x'), output('c2', 'y'), call('c3', 'f', '{"n":1}'), output('c3', 'z')];
    expect(toChatMessages(null, items)).toEqual([
      { role: 'user', content: 'go' },
      {
        role: 'assistant',
        content: null,
        tool_calls: [
          { id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } },
          { id: 'c2', type: 'function', function: { name: 'g', arguments: '{}' } },
        ],
      },
      { role: 'tool', tool_call_id: 'c1', content: 'x' },
      { role: 'tool', tool_call_id: 'c2', content: 'y' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'c3', type: 'function', function: { name: 'f', arguments: '{"n":1}' } }] },
      { role: 'tool', tool_call_id: 'c3', content: 'z' },
    ]);
  });

  it('does not merge calls into an assistant message that a user message separates from them', () => {
    const messages = toChatMessages(null, [assistant('earlier'), user('now'), call('c1', 'f', '{}'), output('c1', 'done')]);
    expect(messages[0]).toEqual({ role: 'assistant', content: 'earlier' });
    expect(messages[2]).toEqual({ role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'f', arguments: '{}' } }] });
  });
});

describe('toChatMessages: the order Chat Completions requires', () => {
  const fn = (id: string) => ({ id, type: 'function', function: { name: 'f', arguments: '{}' } });

  it('moves an output that arrives after a repeated user message directly behind its call (the AI SDK in a conversation)', () => {
    const items = [user('weather?'), call('c1', 'f', '{}'), user('weather?'), output('c1', 'sunny')];
    expect(toChatMessages(null, items)).toEqual([
      { role: 'user', content: 'weather?' },
      { role: 'assistant', content: null, tool_calls: [fn('c1')] },
      { role: 'tool', tool_call_id: 'c1', content: 'sunny' },
      { role: 'user', content: 'weather?' },
    ]);
  });

  it('places outputs sent before their calls, and outputs in another order than the calls, after the calls in call order', () => {
    const items = [user('go'), output('c2', 'two'), call('c1', 'f', '{}'), call('c2', 'f', '{}'), user('and?'), output('c1', 'one')];
    expect(toChatMessages(null, items)).toEqual([
      { role: 'user', content: 'go' },
      { role: 'assistant', content: null, tool_calls: [fn('c1'), fn('c2')] },
      { role: 'tool', tool_call_id: 'c1', content: 'one' },
      { role: 'tool', tool_call_id: 'c2', content: 'two' },
      { role: 'user', content: 'and?' },
    ]);
  });

  it('leaves out calls nobody answered, keeping the assistant text they came with', () => {
    const items = [user('go'), assistant('Checking.'), call('c1', 'f', '{}'), call('c2', 'f', '{}'), output('c2', 'two'), user('never mind'), call('c3', 'f', '{}'), user('hello?')];
    expect(toChatMessages(null, items)).toEqual([
      { role: 'user', content: 'go' },
      { role: 'assistant', content: 'Checking.', tool_calls: [fn('c2')] },
      { role: 'tool', tool_call_id: 'c2', content: 'two' },
      { role: 'user', content: 'never mind' },
      { role: 'user', content: 'hello?' },
    ]);
    expect(toChatMessages(null, [user('go'), assistant('Checking.'), call('c1', 'f', '{}'), user('stop')])).toEqual([
      { role: 'user', content: 'go' },
      { role: 'assistant', content: 'Checking.' },
      { role: 'user', content: 'stop' },
    ]);
  });

  it('leaves out outputs without a call, and a call or output repeated for a call_id already sent', () => {
    const items = [user('go'), output('gone', 'cut by truncation'), call('c1', 'f', '{}'), output('c1', 'first'), user('again'), call('c1', 'f', '{}'), output('c1', 'second')];
    expect(toChatMessages(null, items)).toEqual([
      { role: 'user', content: 'go' },
      { role: 'assistant', content: null, tool_calls: [fn('c1')] },
      { role: 'tool', tool_call_id: 'c1', content: 'first' },
      { role: 'user', content: 'again' },
    ]);
  });
});

describe('toChatRequestOptions', () => {
  it('sends nothing for default parameters', () => {
    expect(toChatRequestOptions(baseParams)).toEqual({});
  });

  it('maps sampling, length, tools, tool_choice and json_schema format', () => {
    const params: RunParams = {
      ...baseParams,
      temperature: 0.2,
      top_p: 0.9,
      max_output_tokens: 256,
      tools: [
        { type: 'function', name: 'get_weather', description: 'Weather now', parameters: { type: 'object', properties: { city: { type: 'string' } } }, strict: true },
        { type: 'function', name: 'noop', description: null, parameters: null, strict: null },
      ],
      tool_choice: { type: 'function', name: 'get_weather' },
      parallel_tool_calls: false,
      text: { format: { type: 'json_schema', name: 'answer', schema: { type: 'object' }, strict: true } },
      reasoning: { effort: 'low' },
      user: 'u-1',
    };
    expect(toChatRequestOptions(params)).toEqual({
      temperature: 0.2,
      top_p: 0.9,
      max_completion_tokens: 256,
      tools: [
        {
          type: 'function',
          function: { name: 'get_weather', description: 'Weather now', parameters: { type: 'object', properties: { city: { type: 'string' } } }, strict: true },
        },
        { type: 'function', function: { name: 'noop' } },
      ],
      tool_choice: { type: 'function', function: { name: 'get_weather' } },
      parallel_tool_calls: false,
      response_format: { type: 'json_schema', json_schema: { name: 'answer', schema: { type: 'object' }, strict: true } },
      reasoning_effort: 'low',
      user: 'u-1',
    });
  });

  it('passes tool_choice strings other than auto, maps json_object, and drops tool settings without tools', () => {
    const tools = [{ type: 'function', name: 'f' }];
    expect(toChatRequestOptions({ ...baseParams, tools, tool_choice: 'required' }).tool_choice).toBe('required');
    expect(toChatRequestOptions({ ...baseParams, tools, tool_choice: 'none' }).tool_choice).toBe('none');
    expect(toChatRequestOptions({ ...baseParams, tools, tool_choice: 'auto' })).not.toHaveProperty('tool_choice');
    expect(toChatRequestOptions({ ...baseParams, tool_choice: 'required', parallel_tool_calls: false })).toEqual({});
    expect(toChatRequestOptions({ ...baseParams, text: { format: { type: 'json_object' } } })).toEqual({ response_format: { type: 'json_object' } });
  });
});
