import { RedlineError } from '../errors.ts';
import type { RoleCaps } from './backend.ts';

// Built-in role table, used until the policy file (src/safety/policy) supplies caps through
// ServiceComponents.roles. The intensity caps mirror the defaults proposed in issue 5:
// viewers browse, creators get mild graded content, studio staff the full graded range.
export const builtinRoles: Record<string, RoleCaps> = {
  viewer: {
    name: 'viewer', maxIntensity: 0, canGenerate: false, canAdmin: false, canSwitchModel: false,
    rate: { capacity: 0, refillPerSecond: 0 }, maxPixels: 0, maxImages: 0, maxSteps: 0,
  },
  creator: {
    name: 'creator', maxIntensity: 1, canGenerate: true, canAdmin: false, canSwitchModel: false,
    rate: { capacity: 40, refillPerSecond: 40 / 60 }, maxPixels: 768 * 768, maxImages: 4, maxSteps: 80,
  },
  studio: {
    name: 'studio', maxIntensity: 3, canGenerate: true, canAdmin: false, canSwitchModel: true,
    rate: { capacity: 200, refillPerSecond: 200 / 60 }, maxPixels: 1024 * 1024, maxImages: 8, maxSteps: 150,
  },
  admin: {
    name: 'admin', maxIntensity: 3, canGenerate: true, canAdmin: true, canSwitchModel: true,
    rate: { capacity: 200, refillPerSecond: 200 / 60 }, maxPixels: 1024 * 1024, maxImages: 8, maxSteps: 150,
  },
};

export class RoleTable {
  constructor(private readonly roles: Record<string, RoleCaps>) {
    for (const [name, caps] of Object.entries(roles)) {
      if (!Number.isInteger(caps.maxIntensity) || caps.maxIntensity < 0 || caps.maxIntensity > 3) {
        throw new RedlineError('bad_role', `role '${name}' has intensity cap ${caps.maxIntensity}; caps are whole numbers 0-3.`);
      }
    }
  }

  names(): string[] {
    return Object.keys(this.roles);
  }

  has(name: string): boolean {
    return Object.hasOwn(this.roles, name);
  }

  get(name: string): RoleCaps {
    const caps = Object.hasOwn(this.roles, name) ? this.roles[name] : undefined;
    if (!caps) {
      throw new RedlineError('unknown_role', `unknown role '${name}'.`, `Roles: ${this.names().join(', ')}.`);
    }
    return caps;
  }
}
