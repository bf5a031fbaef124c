import type { Express } from 'express';
import type { Authenticator } from '@ic/auth';
import { CursorCodec } from '@ic/cursors';
import { sql, type DatabasePool } from '@ic/db';

const sqlPing = sql.unsafe`SELECT 1`;
import { createBaseApp, finishApp, type RateLimits } from '@ic/http';
import type { Logger } from '@ic/telemetry';
import { consoleRouter } from './console';
import { conversationsRouter } from './conversations.routes';
import { ConversationsService } from './conversations.service';

export interface GatewayDeps {
  pool: DatabasePool;
  authenticator: Authenticator;
  logger: Logger;
  cursorSecret: string;
  corsOrigins: readonly string[];
  bodyLimit: string;
  rateLimits?: RateLimits;
  /** Serve the browser console at /console (default true). */
  console?: boolean;
  /** Where the built console is (default services/console/dist). */
  consoleDir?: string;
}

/** The gateway's routes, for mounting into any app that already has the base middleware. */
export function gatewayRouter(deps: Pick<GatewayDeps, 'pool' | 'authenticator' | 'cursorSecret'>) {
  return conversationsRouter(new ConversationsService(deps.pool, new CursorCodec(deps.cursorSecret)), deps.authenticator);
}

export function createGatewayApp(deps: GatewayDeps): Express {
  const app = createBaseApp({
    logger: deps.logger,
    corsOrigins: deps.corsOrigins,
    bodyLimit: deps.bodyLimit,
    authenticator: deps.authenticator,
    rateLimits: deps.rateLimits,
    ready: async () => {
      await deps.pool.query(sqlPing);
    },
  });
  app.use(gatewayRouter(deps));
  if (deps.console ?? true) app.use(consoleRouter(deps.consoleDir));
  finishApp(app, deps.logger);
  return app;
}

