import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { inSequence } from './index';

const req = {} as Request;
const res = {} as Response;

/** Runs the chain and resolves with what reached the outer `next` (undefined: passed on without an error). */
function run(handlers: RequestHandler[]): Promise<unknown> {
  return new Promise((resolve) => inSequence(handlers)(req, res, ((error?: unknown) => resolve(error)) as NextFunction));
}

describe('inSequence', () => {
  it('runs the handlers in order, also across asynchronous steps, then passes on', async () => {
    const seen: string[] = [];
    const outcome = await run([
      (_req, _res, next) => {
        seen.push('a');
        next();
      },
      (_req, _res, next) => {
        seen.push('b');
        setTimeout(next, 5);
      },
      (_req, _res, next) => {
        seen.push('c');
        next();
      },
    ]);
    expect(seen).toEqual(['a', 'b', 'c']);
    expect(outcome).toBeUndefined();
  });

  it('stops at an error passed to next, thrown, or a rejected promise, and hands it on', async () => {
    const later = jest.fn((_req: Request, _res: Response, next: NextFunction) => next());
    const failure = new Error('no');
    expect(await run([(_req, _res, next) => next(failure), later])).toBe(failure);
    expect(
      await run([
        () => {
          throw failure;
        },
        later,
      ]),
    ).toBe(failure);
    expect(await run([async () => Promise.reject(failure), later])).toBe(failure);
    expect(later).not.toHaveBeenCalled();
  });

  it('an empty chain passes straight on', async () => {
    expect(await run([])).toBeUndefined();
  });
});
