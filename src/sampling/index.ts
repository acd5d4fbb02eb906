/**
 * Schedulers and seeds, as diffusers and A1111 compute them.
 *
 * txt2img with CFG (batch of B images, latent [B,4,H/8,W/8]):
 *
 *   const rng = new ImageRng({ seeds: [seed, seed + 1, ...], shape: [4, h, w], source: 'cpu' });
 *   const s = create('Euler a', { steps: 20 });       // A1111 name or alias ('euler_ancestral')
 *   const x = rng.next();                              // first draw = initial noise
 *   for (let k = 0; k < x.length; k++) x[k] *= s.initNoiseSigma;
 *   for (let i = 0; i < s.timesteps.length; i++) {
 *     const xin = s.scaleModelInput(x, i);             // may be x itself: do not write into it
 *     const [u, c] = unet([xin, xin], s.timesteps[i], [negEmbeds, posEmbeds]);
 *     for (let k = 0; k < eps.length; k++) eps[k] = u[k] + cfg * (c[k] - u[k]);
 *     s.step(eps, i, x, rng);                          // x updated in place; noise from the same streams
 *   }                                                  // s.predOriginalSample: x0 preview of the last step
 *
 * img2img: create(name, { steps, strength }) keeps the last int(steps*strength)
 * timesteps (LCM: shrinks its origin grid); start from
 * x = s.addNoise(imageLatents, rng.next()) without initNoiseSigma, then the same loop.
 */
export { create, resolveSamplerName, SAMPLER_NAMES, type SamplerName } from './registry.ts';
export type { NoiseSource, Sampler, SamplerOptions } from './sampler.ts';
export { noiseSchedule, SD15_SCHEDULER_CONFIG, type NoiseSchedule, type SchedulerConfig } from './schedule.ts';
export * from './rng/index.ts';
