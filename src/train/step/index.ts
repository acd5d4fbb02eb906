export { buildLoraStep, buildUnetFullStep, buildVaeDecoderStep, type CheckpointMode, type DiffusionStepOptions, type LoraTarget, type ParamSpec, type StepGraph, type StepModel } from './graphs.ts';
export { initLoraParams, loraFromPeftFile, loraTargets, type TargetSelection, type UnetTargetSet } from './lora.ts';
export { addNoise, minSnrWeights, offsetNoise, sd15AlphasCumprod, snr } from './noise.ts';
export { TrainStepSession, type StepBatch, type StepResult } from './session.ts';
