import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import OpenAI, { type ClientOptions } from 'openai';
import { createGatewayApp } from '@ic/api-gateway';
import { Authenticator } from '@ic/auth';
import { createHttpServer } from '@ic/http';
import type { DatabasePool } from '@ic/db';
import { createLogger, type Logger } from '@ic/telemetry';

export const TEST_CURSOR_SECRET = 'test-cursor-secret-0123456789';

export interface GatewayOptions {
  /** Token cache TTL of the gateway's Authenticator (default 0: every request reads the token row). */
  tokenCacheTtlMs?: number;
  /** Use this Authenticator instead of building one (tokenCacheTtlMs is then ignored). */
  authenticator?: Authenticator;
  cursorSecret?: string;
  corsOrigins?: readonly string[];
  bodyLimit?: string;
  logger?: Logger;
  /** Serve the console at /console (default true, as the gateway does). */
  console?: boolean;
  /** Where the built console is (default services/console/dist). */
  consoleDir?: string;
}

export interface RunningGateway {
  /** `http://127.0.0.1:PORT/v1`, the openai client's baseURL. */
  baseURL: string;
  /** `http://127.0.0.1:PORT`, for plain-fetch tests of routes outside /v1. */
  origin: string;
  authenticator: Authenticator;
  cursorSecret: string;
  /** The official openai client pointed at this gateway: no retries, so a status surfaces as its error class. */
  client(token: string, extraHeaders?: Record<string, string>, options?: Omit<ClientOptions, 'apiKey' | 'baseURL'>): OpenAI;
  close(): Promise<void>;
}

/** Starts `createGatewayApp` on an ephemeral loopback port. */
export async function startGateway(pool: DatabasePool, options: GatewayOptions = {}): Promise<RunningGateway> {
  const authenticator = options.authenticator ?? new Authenticator(pool, options.tokenCacheTtlMs ?? 0);
  const cursorSecret = options.cursorSecret ?? TEST_CURSOR_SECRET;
  const app = createGatewayApp({
    pool,
    authenticator,
    logger: options.logger ?? createLogger('test-gateway', process.env.TEST_LOG_LEVEL ?? 'silent'),
    cursorSecret,
    corsOrigins: options.corsOrigins ?? ['*'],
    bodyLimit: options.bodyLimit ?? '1mb',
    console: options.console,
    consoleDir: options.consoleDir,
  });
  const server = await new Promise<Server>((resolve, reject) => {
    const listening = createHttpServer(app).listen(0, '127.0.0.1', () => resolve(listening));
    listening.once('error', reject);
  });
  const { port } = server.address() as AddressInfo;
  const origin = `http://127.0.0.1:${port}`;
  const baseURL = `${origin}/v1`;
  return {
    baseURL,
    origin,
    authenticator,
    cursorSecret,
    client: (token, extraHeaders = {}, clientOptions = {}) => openaiClient(baseURL, token, extraHeaders, clientOptions),
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}

export function openaiClient(baseURL: string, token: string, extraHeaders: Record<string, string> = {}, options: Omit<ClientOptions, 'apiKey' | 'baseURL'> = {}): OpenAI {
  return new OpenAI({ apiKey: token, baseURL, maxRetries: 0, defaultHeaders: extraHeaders, ...options });
}
