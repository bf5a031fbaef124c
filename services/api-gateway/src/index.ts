export * from './app';
export * from './env';
export * from './conversations.service';
export * from './console';
