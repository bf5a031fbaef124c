import type { Response } from 'express';
import type { Principal } from '@ic/auth';

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Locals {
      requestId: string;
      principal?: Principal;
      apiVersion: string;
    }
  }
}

/** The verified caller; routes behind `authenticate` always have one. */
export function principalOf(res: Response): Principal {
  const principal = res.locals.principal;
  if (!principal) throw new Error('principalOf called on an unauthenticated route');
  return principal;
}
