import { startStream } from './turn.processor';

/** A model-like stream that records when it was sent, what was read and whether it was closed. */
function recordingStream(values: string[], failAfter?: number) {
  const log: string[] = [];
  const stream = (async function* () {
    log.push('sent');
    try {
      for (const [index, value] of values.entries()) {
        if (index === failAfter) throw new Error('upstream failed');
        yield value;
      }
    } finally {
      log.push('closed');
    }
  })();
  return { log, stream };
}

describe('startStream: the model call goes out before the caller reads it', () => {
  it('sends the call at once, then yields every event in order once read', async () => {
    const { log, stream } = recordingStream(['a', 'b', 'c']);
    const call = startStream(stream);
    await Promise.resolve();
    // Sent while the caller is still busy elsewhere (the event log's fence), before anything is read.
    expect(log).toEqual(['sent']);
    const read: string[] = [];
    for await (const value of call.events) read.push(value);
    expect(read).toEqual(['a', 'b', 'c']);
    expect(log).toEqual(['sent', 'closed']);
  });

  it('closes the call when the reader stops early', async () => {
    const { log, stream } = recordingStream(['a', 'b', 'c']);
    const call = startStream(stream);
    for await (const value of call.events) if (value === 'a') break;
    expect(log).toEqual(['sent', 'closed']);
  });

  it('holds a failure of the first read for the reader, without an unhandled rejection', async () => {
    const { stream } = recordingStream(['a'], 0);
    const call = startStream(stream);
    // Nothing awaits the call for a while (the fence is in flight): the failure must wait for its reader.
    await new Promise((resolve) => setTimeout(resolve, 20));
    const reading = (async () => {
      for await (const value of call.events) void value;
    })();
    await expect(reading).rejects.toThrow('upstream failed');
  });

  it('cancel closes a call that will not be read', async () => {
    const { log, stream } = recordingStream(['a', 'b']);
    const call = startStream(stream);
    await call.cancel();
    expect(log).toEqual(['sent', 'closed']);
  });
});
