import { ShutdownRegistry, createLogger, runMain, shutdownDeadlineMs, startTelemetry } from '@ic/telemetry';
const telemetry = startTelemetry('ic-gateway');

import { Authenticator } from '@ic/auth';
import { createDbPool } from '@ic/db';
import { httpTimeouts } from '@ic/config';
import { closeHttpServer, createHttpServer, RateLimits } from '@ic/http';
import { createGatewayApp } from './app';
import { loadGatewayEnv } from './env';

async function main(): Promise<void> {
  const env = loadGatewayEnv();
  const logger = createLogger('api-gateway', env.LOG_LEVEL);
  const shutdown = new ShutdownRegistry(logger, shutdownDeadlineMs(env.SHUTDOWN_GRACE_PERIOD_MS));
  const pool = await createDbPool(env.DATABASE_URL, { maximumPoolSize: env.DATABASE_POOL_SIZE, preparedStatements: env.DATABASE_PREPARED_STATEMENTS });
  const app = createGatewayApp({
    pool,
    authenticator: new Authenticator(pool, env.TOKEN_CACHE_TTL_MS),
    logger,
    cursorSecret: env.CURSOR_SECRET,
    corsOrigins: env.CORS_ORIGINS,
    bodyLimit: env.BODY_LIMIT,
    // Counted per replica: the gateway keeps no Redis connection.
    console: env.CONSOLE_ENABLED,
    rateLimits: new RateLimits({ requestsPerMinute: env.RATE_LIMIT_REQUESTS_PER_MINUTE, turnsPerMinute: 0, keyPrefix: 'ic', logger }),
  });
  const server = createHttpServer(app, httpTimeouts(env)).listen(env.PORT, env.HOST, () => logger.info({ port: env.PORT }, 'api-gateway listening'));
  shutdown.register('http', () => closeHttpServer(server));
  shutdown.register('postgres', () => pool.end());
  shutdown.register('telemetry', () => telemetry.shutdown());
  shutdown.listen();
}

runMain(main);
