// Content categories the safety layer knows. Hard-blocked categories are refused for every
// caller whatever the policy file says; a policy that tries to enable one fails to load.
import type { SidecarCategory } from '../adapters/registry.ts';

export const HARD_BLOCKED_CATEGORIES = [
  'minors_sexual',
  'minors_graded',
  'sexual_violence',
  'real_person_graded',
  'real_person_sexual',
  'extremist',
  'self_harm_promotion',
] as const;

/** Categories a policy configures: adult sexual content (off by default) and the graded one. */
export const CONFIGURABLE_CATEGORIES = ['sexual', 'graphic_injury'] as const;

export type HardBlockedCategory = (typeof HARD_BLOCKED_CATEGORIES)[number];
export type ConfigurableCategory = (typeof CONFIGURABLE_CATEGORIES)[number];
export type Category = HardBlockedCategory | ConfigurableCategory;

export const ALL_CATEGORIES: readonly Category[] = [...HARD_BLOCKED_CATEGORIES, ...CONFIGURABLE_CATEGORIES];

const hardSet = new Set<string>(HARD_BLOCKED_CATEGORIES);

export function isHardBlocked(category: string): category is HardBlockedCategory {
  return hardSet.has(category);
}

export type IntensityLevel = 0 | 1 | 2 | 3;
export const MAX_INTENSITY: IntensityLevel = 3;

export const CATEGORY_DESCRIPTIONS: Record<Category, string> = {
  minors_sexual: 'sexual or sexualised content involving minors',
  minors_graded: 'minors in any graded (injury, gore) content',
  sexual_violence: 'sexual violence and sexualised injury',
  real_person_graded: 'real, identifiable people in graded content',
  real_person_sexual: 'real, identifiable people in sexual content',
  extremist: 'extremist propaganda and glorification of real atrocities',
  self_harm_promotion: 'promotion or graphic depiction of self-harm and suicide',
  sexual: 'adult sexual content (nudity, sexual acts)',
  graphic_injury: 'graded injury content: 0 none, 1 mild, 2 moderate, 3 graphic',
};

/**
 * The policy category that governs an adapter declaring each sidecar category
 * (SIDECAR_CATEGORIES in src/adapters/registry.ts, the sidecar schema's list; a category
 * missing here fails the type check). An adapter governed by `graphic_injury` is graded: it
 * runs at the strength the policy gives the effective intensity level. The sidecar schema
 * refuses every other category, and hard-blocked ones outright.
 */
export const ADAPTER_CATEGORY_POLICY: Readonly<Record<SidecarCategory, ConfigurableCategory>> = {
  'graphic-injury': 'graphic_injury',
};

/** Whether a sidecar category makes its adapter graded (policy category graphic_injury). */
export function isGradedAdapterCategory(category: string | undefined): boolean {
  return category !== undefined && Object.hasOwn(ADAPTER_CATEGORY_POLICY, category) && ADAPTER_CATEGORY_POLICY[category as SidecarCategory] === 'graphic_injury';
}
