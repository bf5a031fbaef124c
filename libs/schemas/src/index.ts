export * from './ids';
export * from './errors';
export * from './api';
export * from './items';
export * from './responses';
export * from './rows';
export * from './jobs';
export * from './present';
