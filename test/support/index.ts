export * from './db';
export * from './fixtures';
export * from './gateway';
export * from './http';
export * from './transcript';
export * from './fake-upstream';
export * from './turn-stack';
export * from './ports';
