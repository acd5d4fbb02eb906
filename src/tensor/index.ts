export * from './dtype.ts';
export * from './half.ts';
export * from './tensor.ts';
export * from './safetensors.ts';
