export * from './pool';
export * from './migrate';
export * from './repositories/tenants';
export * from './repositories/conversations';
export * from './repositories/runs';
export * from './repositories/items';
