export { buildStepGraph, type GuidanceInput, STEP_SCALARS, type StepGraphKind, type StepGraphOptions } from './step-graphs.ts';
export { SamplerGraphPlan } from './plan.ts';
