export {
  createStepSession, type DeviceLoopResult, type DeviceLoopRun, type DeviceStepPlan, deviceOutputOptions, gpuBufferApis, HostReader, runDeviceLoop, UNET_NAMES, type UnetNames,
} from './loop.ts';
