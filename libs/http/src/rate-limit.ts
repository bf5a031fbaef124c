import type { RequestHandler } from 'express';
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, type RateLimiterAbstract } from 'rate-limiter-flexible';
import type { Cluster, Redis as IORedis } from 'ioredis';
import { apiError } from '@ic/schemas';
import type { Logger } from '@ic/telemetry';
import { principalOf } from './principal';

export interface RateLimitOptions {
  /** Requests per minute per token (0: no limit). */
  requestsPerMinute: number;
  /** Turns (POST /v1/responses) per minute per smith (0: no limit). */
  turnsPerMinute: number;
  /** Shared across replicas when given; otherwise each process counts on its own. */
  redis?: IORedis | Cluster;
  keyPrefix: string;
  logger: Logger;
}

/**
 * Per-token request limits and per-smith turn limits. Smith tokens are browser-safe, so a leaked one
 * must not be able to flood the service. Counters live in Redis when there is one (a memory limiter
 * stands in while Redis is unreachable, so an outage never blocks traffic) and in memory otherwise.
 */
export class RateLimits {
  private readonly requests: RateLimiterAbstract | null;
  private readonly turns: RateLimiterAbstract | null;

  constructor(private readonly options: RateLimitOptions) {
    this.requests = this.limiter('requests', options.requestsPerMinute);
    this.turns = this.limiter('turns', options.turnsPerMinute);
  }

  private limiter(kind: string, perMinute: number): RateLimiterAbstract | null {
    if (perMinute <= 0) return null;
    const common = { points: perMinute, duration: 60, keyPrefix: `${this.options.keyPrefix}:ratelimit:${kind}` };
    if (!this.options.redis) return new RateLimiterMemory(common);
    return new RateLimiterRedis({ ...common, storeClient: this.options.redis, insuranceLimiter: new RateLimiterMemory(common) });
  }

  /** Middleware for authenticated routes: counts the request against its token. */
  perToken(): RequestHandler {
    return (_req, res, next) => {
      if (!this.requests) return next();
      this.consume(this.requests, principalOf(res).tokenId, 'requests', res).then(() => next(), next);
    };
  }

  /** Counts one turn against the smith; throws the 429 when the smith is over its limit. */
  async consumeTurn(smithId: string, res: Parameters<RequestHandler>[1]): Promise<void> {
    if (this.turns) await this.consume(this.turns, smithId, 'turns', res);
  }

  private async consume(limiter: RateLimiterAbstract, key: string, kind: 'requests' | 'turns', res: Parameters<RequestHandler>[1]): Promise<void> {
    const limit = limiter.points;
    try {
      const state = await limiter.consume(key);
      res.setHeader(`x-ratelimit-limit-${kind}`, String(limit));
      res.setHeader(`x-ratelimit-remaining-${kind}`, String(state.remainingPoints));
    } catch (rejection) {
      if (!(rejection instanceof RateLimiterRes)) {
        // A limiter failure must not take the API down with it.
        this.options.logger.warn({ err: rejection, kind }, 'rate limiter failed; letting the request through');
        return;
      }
      const retryAfterSeconds = Math.max(1, Math.ceil(rejection.msBeforeNext / 1000));
      throw apiError(
        'rate_limit_exceeded',
        { limit, retryAfterSeconds, per: kind === 'turns' ? 'turns per minute for this smith' : 'requests per minute for this token' },
        {
          headers: {
            'retry-after': String(retryAfterSeconds),
            [`x-ratelimit-limit-${kind}`]: String(limit),
            [`x-ratelimit-remaining-${kind}`]: '0',
            [`x-ratelimit-reset-${kind}`]: `${retryAfterSeconds}s`,
          },
        },
      );
    }
  }
}
