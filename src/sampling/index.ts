export { create, resolveSamplerName, SAMPLER_NAMES, type SamplerName } from './registry.ts';
export type { NoiseSource, Sampler, SamplerOptions } from './sampler.ts';
export { noiseSchedule, SD15_SCHEDULER_CONFIG, type NoiseSchedule, type SchedulerConfig } from './schedule.ts';
export * from './rng/index.ts';
