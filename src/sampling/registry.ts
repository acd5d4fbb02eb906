import { RedlineError } from '../errors.ts';
import type { Sampler, SamplerOptions } from './sampler.ts';
import { DdimSampler } from './samplers/ddim.ts';
import { DpmPP2MSampler } from './samplers/dpmpp-2m.ts';
import { EulerAncestralSampler } from './samplers/euler-ancestral.ts';
import { EulerSampler } from './samplers/euler.ts';
import { LcmSampler } from './samplers/lcm.ts';
import { LmsSampler } from './samplers/lms.ts';
import { PndmSampler } from './samplers/pndm.ts';
import { UniPcSampler } from './samplers/unipc.ts';

/** Sampler names as A1111 shows them (PNDM is A1111's "PLMS"). */
export const SAMPLER_NAMES = ['DDIM', 'PNDM', 'Euler', 'Euler a', 'LMS', 'DPM++ 2M', 'DPM++ 2M Karras', 'UniPC', 'LCM'] as const;
export type SamplerName = (typeof SAMPLER_NAMES)[number];

const FACTORIES: Record<SamplerName, (o: SamplerOptions) => Sampler> = {
  'DDIM': (o) => new DdimSampler(o),
  'PNDM': (o) => new PndmSampler(o),
  'Euler': (o) => new EulerSampler(o),
  'Euler a': (o) => new EulerAncestralSampler(o),
  'LMS': (o) => new LmsSampler(o),
  'DPM++ 2M': (o) => new DpmPP2MSampler(o, false),
  'DPM++ 2M Karras': (o) => new DpmPP2MSampler(o, true),
  'UniPC': (o) => new UniPcSampler(o),
  'LCM': (o) => new LcmSampler(o),
};

/**
 * Other spellings users bring: diffusers/ComfyUI ids, k-diffusion function names,
 * diffusers class names, A1111 API aliases. Keys are normalised by normaliseName().
 */
const ALIASES: Record<string, SamplerName> = {
  ddim: 'DDIM', ddimscheduler: 'DDIM',
  pndm: 'PNDM', plms: 'PNDM', pndmscheduler: 'PNDM',
  euler: 'Euler', keuler: 'Euler', sampleeuler: 'Euler', eulerdiscretescheduler: 'Euler',
  eulera: 'Euler a', eulerancestral: 'Euler a', keulerancestral: 'Euler a', keulera: 'Euler a',
  sampleeulerancestral: 'Euler a', eulerancestraldiscretescheduler: 'Euler a',
  lms: 'LMS', klms: 'LMS', samplelms: 'LMS', lmsdiscretescheduler: 'LMS',
  dpmpp2m: 'DPM++ 2M', kdpmpp2m: 'DPM++ 2M', sampledpmpp2m: 'DPM++ 2M', dpmsolvermultistepscheduler: 'DPM++ 2M',
  dpmpp2mkarras: 'DPM++ 2M Karras', kdpmpp2mkarras: 'DPM++ 2M Karras',
  unipc: 'UniPC', unipcmultistepscheduler: 'UniPC',
  lcm: 'LCM', lcmscheduler: 'LCM',
};

/** Case, spaces, '+', '_', '-' and '.' do not matter: "dpmpp_2m_karras" = "DPM++ 2M Karras". */
function normaliseName(name: string): string {
  return name.toLowerCase().replace(/\+/g, 'p').replace(/[\s_\-.]/g, '');
}

const LOOKUP = new Map<string, SamplerName>([
  ...SAMPLER_NAMES.map((n) => [normaliseName(n), n] as const),
  ...Object.entries(ALIASES),
]);

/** The A1111 name for any accepted spelling; RedlineError listing the valid names otherwise. */
export function resolveSamplerName(name: string): SamplerName {
  const found = LOOKUP.get(normaliseName(name));
  if (!found) {
    throw new RedlineError(
      'unknown_sampler',
      `Unknown sampler "${name}".`,
      `Valid samplers: ${SAMPLER_NAMES.join(', ')} (diffusers-style ids such as euler_ancestral or dpmpp_2m_karras also work).`,
    );
  }
  return found;
}

/** A fresh sampler run: `create('Euler a', { steps: 20 })`, `create('ddim', { steps: 30, strength: 0.6 })`. */
export function create(name: string, options: SamplerOptions): Sampler {
  return FACTORIES[resolveSamplerName(name)](options);
}
