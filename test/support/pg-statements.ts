import { Client } from 'pg';

export interface StatementRecorder {
  /** Statements sent since the last `take()` (or since recording started), in order. */
  take(): string[];
  stop(): void;
}

/**
 * Records every statement any pg client in this process sends (one statement = one round trip), so a
 * test can count what a code path costs in Postgres round trips. Patches `Client.prototype.query`.
 */
export function recordPgStatements(): StatementRecorder {
  const original = Client.prototype.query;
  let statements: string[] = [];
  const patched = function (this: Client, ...args: unknown[]) {
    const [first] = args;
    const text = typeof first === 'string' ? first : ((first as { text?: string } | undefined)?.text ?? String(first));
    statements.push(text.replace(/\s+/g, ' ').trim());
    return (original as (...rest: unknown[]) => unknown).apply(this, args);
  };
  Client.prototype.query = patched as typeof Client.prototype.query;
  return {
    take: () => {
      const taken = statements;
      statements = [];
      return taken;
    },
    stop: () => {
      Client.prototype.query = original;
    },
  };
}
