export * from './env';
export * from './runtime';
export * from './turns.service';
export * from './scheduler';
export * from './presenter';
export * from './events';
export * from './run-lifecycle';
export { MAX_RUN_ATTEMPTS } from './turn.processor';
