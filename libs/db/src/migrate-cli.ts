/** `node libs/db/dist/migrate-cli.js`: applies pending migrations to DATABASE_URL (the Helm pre-upgrade hook runs this). */
import { z } from 'zod';
import { parseEnv } from '@ic/config';
import { migrate } from './migrate';

const env = parseEnv(z.object({ DATABASE_URL: z.string().regex(/^postgres(ql)?:\/\//, 'must be a postgres:// URL') }));

migrate(env.DATABASE_URL).then(
  (result) => {
    process.stdout.write(`${JSON.stringify({ applied: result.applied, already_applied: result.alreadyApplied })}\n`);
  },
  (error: unknown) => {
    process.stderr.write(`${(error as Error).message}\n`);
    process.exit(1);
  },
);
