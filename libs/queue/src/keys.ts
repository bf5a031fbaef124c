/**
 * Every Redis key and channel name this deployment uses, in one place. Names start with REDIS_PREFIX
 * (so several stacks can share a Redis, and ACL key patterns like `~ic:*` work) and carry a hash tag
 * `{…}` wherever several keys are used together, so they land in one slot of a Redis Cluster:
 *
 *   ic:{turns}:turns:wait, ic:{turns}:turns:<jobId>, …   one BullMQ queue (its Lua scripts touch many keys)
 *   ic:{run_…}:events                                     a run's event stream
 *   ic:{run_…}:log                                        its attempt fence and closed flag (same slot: one Lua script uses both)
 *   ic:{run_…}:appended                                   its wake-up channel
 *   ic:signals:cancel                                     cancel broadcasts (one channel, no key)
 *   ic:signals:upstream-hold                              model upstream back-off holds shared between processes
 *   ic:{limits:<digest>}:state, …:deadlines               a model's limits as every process paces to them (one Lua script uses both)
 *
 * Pub/sub uses plain PUBLISH/SUBSCRIBE, which a cluster relays to every node: a subscriber on any node
 * hears every run's wake-ups, at the cost of cluster-bus traffic per event batch.
 */
export class RedisKeys {
  constructor(readonly prefix: string) {}

  /** BullMQ `prefix` option of a queue: the tag keeps all of the queue's keys in one slot. */
  queuePrefix(queue: string): string {
    return `${this.prefix}:{${queue}}`;
  }

  /** The tag every key of one run shares (event stream and anything used with it in one script). */
  private run(runId: string): string {
    return `${this.prefix}:{${runId}}`;
  }

  runEvents(runId: string): string {
    return `${this.run(runId)}:events`;
  }

  /** The log's small hash (current attempt, closed flag): the append script uses it with the stream, so same slot. */
  runLog(runId: string): string {
    return `${this.run(runId)}:log`;
  }

  runAppendedChannel(runId: string): string {
    return `${this.run(runId)}:appended`;
  }

  cancelChannel(): string {
    return `${this.prefix}:signals:cancel`;
  }

  upstreamHoldChannel(): string {
    return `${this.prefix}:signals:upstream-hold`;
  }

  /** A model's shared pacing mirror and the deadlines of its calls in flight (`quota` is the adapter's digest of upstream, key and model). */
  upstreamLimits(quota: string): { state: string; deadlines: string } {
    const tag = `${this.prefix}:{limits:${quota}}`;
    return { state: `${tag}:state`, deadlines: `${tag}:deadlines` };
  }
}
