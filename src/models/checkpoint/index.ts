export * from './configs.ts';
export * from './sd15-keymap.ts';
export * from './detect.ts';
export * from './weight-source.ts';
export * from './load.ts';
export * from './hash.ts';
export * from './write.ts';
export * from './registry.ts';
