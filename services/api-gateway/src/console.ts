import { existsSync } from 'node:fs';
import path from 'node:path';
import express, { type RequestHandler, type Router } from 'express';
import { apiError } from '@ic/schemas';

/** Where `npm run build:console` (Vite) writes the console: services/console/dist, from src/ or dist/ alike. */
export const CONSOLE_BUILD_DIR = path.resolve(__dirname, '../../console/dist');

/**
 * The console's policy: its own scripts and styles only, API calls to its own origin only, never framed.
 * Model text is sanitised before it is rendered; this is the second line if that ever fails.
 */
export const CONSOLE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const securityHeaders: RequestHandler = (_req, res, next) => {
  res.setHeader('Content-Security-Policy', CONSOLE_CSP);
  res.setHeader('X-Content-Type-Options', 'nosniff');
  res.setHeader('Referrer-Policy', 'no-referrer');
  next();
};

/**
 * Serves the console (a static single-page app, no server-side state) at /console. Assets carry a
 * content hash in their names, so they are cached for a year; index.html is revalidated on every load
 * so a new deployment is picked up at once. Until the console is built, /console answers a 404 that
 * says how to build it.
 */
export function consoleRouter(directory: string = CONSOLE_BUILD_DIR): Router {
  const router = express.Router({ strict: true });
  const indexFile = path.join(directory, 'index.html');
  const index: RequestHandler = (_req, res, next) => {
    if (!existsSync(indexFile)) return next(apiError('console_not_built'));
    res.setHeader('Cache-Control', 'no-cache');
    res.sendFile(indexFile, { cacheControl: false, dotfiles: 'deny' }, (error) => {
      if (error) next(error);
    });
  };
  router.use('/console', securityHeaders);
  router.get(['/console', '/console/', '/console/index.html'], index);
  router.use(
    '/console/assets',
    express.static(path.join(directory, 'assets'), { index: false, redirect: false, fallthrough: true, immutable: true, maxAge: '365d', dotfiles: 'deny' }),
  );
  return router;
}
