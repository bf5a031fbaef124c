export * from './title';
export * from './titler.processor';
export * from './env';

export const TITLE_QUEUE = 'titles';
