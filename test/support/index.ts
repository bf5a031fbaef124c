export * from './db'; export * from './fixtures';
