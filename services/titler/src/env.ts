import { z } from 'zod';
import { databaseEnv, intEnv, logEnv, modelEnv, parseEnv, redisEnv, requireModelUpstream, shutdownEnv } from '@ic/config';

export const TitlerEnv = z.object({
  ...databaseEnv,
  ...logEnv,
  ...redisEnv,
  ...modelEnv,
  ...shutdownEnv,
  /** `message`: the first user message, trimmed to a title. `model`: ask TITLER_MODEL for a short title, falling back to the message. */
  TITLER_MODE: z.enum(['message', 'model']).default('message'),
  TITLER_MODEL: z.string().default('default'),
  TITLER_CONCURRENCY: intEnv(4, 1, 128),
  HEALTH_PORT: intEnv(8081, 0, 65535),
});
export type TitlerEnv = z.infer<typeof TitlerEnv>;
/** The titler's configuration, parsed once; a model upstream is required only in `model` mode. */
export function loadTitlerEnv(source: NodeJS.ProcessEnv = process.env): TitlerEnv {
  const env = parseEnv(TitlerEnv, source);
  if (env.TITLER_MODE === 'model') requireModelUpstream(env);
  return env;
}
