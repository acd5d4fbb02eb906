export * from './module-index.ts';
export * from './load.ts';
export * from './fuse.ts';
export * from './runtime.ts';
export * from './registry.ts';
export * from './text.ts';
export * from './merge.ts';
export * from './fuse-ort.ts';
