import type { StreamEvent } from '@ic/queue';
import { completeLog, EventSequencer, OutputAssembler, rebuildEvents } from './events';
import type { ResponseObject } from './presenter';

const runId = 'run_eventsTestRun000000000';
const response = (text: string): ResponseObject =>
  ({
    id: runId,
    object: 'response',
    status: 'completed',
    output: [{ id: `${runId}.o`, type: 'message', role: 'assistant', status: 'completed', content: [{ type: 'output_text', text, annotations: [] }] }],
  }) as unknown as ResponseObject;

/** A log as a live attempt wrote it: created, in_progress, the message opened and `streamed` as deltas. */
function liveLog(...streamed: string[]): StreamEvent[] {
  const sequencer = new EventSequencer(0);
  sequencer.emit('response.created', { response: {} });
  sequencer.emit('response.in_progress', { response: {} });
  const assembler = new OutputAssembler(runId, sequencer);
  const log: StreamEvent[] = [];
  for (const delta of streamed) {
    assembler.accept({ type: 'text_delta', delta });
    log.push(...sequencer.take()); // one flush per delta, as if each left in its own window
  }
  return log;
}
const tailOf = (log: StreamEvent[], final: ResponseObject) => {
  const sequencer = new EventSequencer(log.at(-1)!.sequence_number + 1);
  completeLog(log, final, sequencer);
  return sequencer.take();
};
const text = (events: StreamEvent[]) => events.filter((event) => event.type === 'response.output_text.delta').map((event) => event.delta).join('');

describe('completing a log from the stored response', () => {
  it('continues the streamed prefix: the rest of the text, the …done events and the terminal event', () => {
    const log = liveLog('Hel', 'lo, ');
    const tail = tailOf(log, response('Hello, world'));
    expect(tail.map((event) => event.type)).toEqual([
      'response.output_text.delta',
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.completed',
    ]);
    expect(tail[0]).toMatchObject({ delta: 'world', sequence_number: log.length, output_index: 0, item_id: `${runId}.o` });
    expect(text([...log, ...tail])).toBe('Hello, world');
  });

  it('resets with response.in_progress and sends the item whole when the log shows another attempt’s text', () => {
    const log = liveLog('Bonjour');
    const tail = tailOf(log, response('Hello'));
    expect(tail.map((event) => event.type)).toEqual([
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      'response.output_text.delta',
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.completed',
    ]);
    expect(text(tail)).toBe('Hello');
  });

  it('adds only the terminal event when every item is already done, and rebuilds an expired log whole', () => {
    const sequencer = new EventSequencer(0);
    const assembler = new OutputAssembler(runId, sequencer);
    sequencer.emit('response.created', { response: {} });
    sequencer.emit('response.in_progress', { response: {} });
    assembler.accept({ type: 'text_delta', delta: 'Hi' });
    assembler.finish('completed');
    const log = sequencer.take();
    expect(tailOf(log, response('Hi')).map((event) => event.type)).toEqual(['response.completed']);
    const rebuilt = rebuildEvents(response('Hi'));
    expect(rebuilt.map((event) => event.type)).toEqual(log.map((event) => event.type).concat('response.completed'));
  });
});

describe('EventSequencer', () => {
  it('merges waiting deltas of one item into one event and numbers what it hands out contiguously', () => {
    const sequencer = new EventSequencer(5);
    const assembler = new OutputAssembler(runId, sequencer);
    for (const delta of ['a', 'b', 'c']) assembler.accept({ type: 'text_delta', delta });
    const first = sequencer.take();
    expect(first.map((event) => [event.type, event.sequence_number])).toEqual([
      ['response.output_item.added', 5],
      ['response.content_part.added', 6],
      ['response.output_text.delta', 7],
    ]);
    expect(first[2]).toMatchObject({ delta: 'abc' });
    // A batch that could not be written goes back and is merged with what followed.
    assembler.accept({ type: 'text_delta', delta: 'd' });
    const failed = sequencer.take();
    assembler.accept({ type: 'text_delta', delta: 'e' });
    sequencer.giveBack(failed);
    expect(sequencer.take()).toEqual([expect.objectContaining({ sequence_number: 8, delta: 'de' })]);
  });
});
