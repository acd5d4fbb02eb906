export * from './module-index.ts';
export * from './load.ts';
export * from './fuse.ts';
export * from './runtime.ts';
