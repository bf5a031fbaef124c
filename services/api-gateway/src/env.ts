import { z } from 'zod';
import { consoleEnv, databaseEnv, httpEnv, logEnv, parseEnv, shutdownEnv } from '@ic/config';

export const GatewayEnv = z.object({ ...databaseEnv, ...httpEnv, ...logEnv, ...shutdownEnv, ...consoleEnv });
export type GatewayEnv = z.infer<typeof GatewayEnv>;

/** The api-gateway's configuration, parsed once. */
export const loadGatewayEnv = (source: NodeJS.ProcessEnv = process.env): GatewayEnv => parseEnv(GatewayEnv, source);
