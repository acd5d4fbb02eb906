// The content policy: loading, validation (errors name the bad field's path), and the
// per-level generation settings derived from it.
import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import { RedlineError } from '../../errors.ts';
import {
  ALL_CATEGORIES, HARD_BLOCKED_CATEGORIES, isHardBlocked,
  type Category, type IntensityLevel,
} from '../categories.ts';
import { SLD_PRESETS, type SldParams } from '../sld.ts';

export const REQUIRED_ROLES = ['viewer', 'creator', 'studio', 'admin'] as const;

export type SldSetting = 'off' | keyof typeof SLD_PRESETS | SldParams;

export interface LevelSettings {
  level: IntensityLevel;
  /** Adapter strength for this level when the adapter has no calibration sidecar. */
  adapterStrength: number;
  /** Optional ceiling on classifier-free guidance scale at this level. */
  cfgScaleMax?: number;
  /** SLD applied when a request asking for more than this level is clamped to it. */
  sldWhenClamped: SldSetting;
}

export interface RolePolicy {
  maxIntensity: IntensityLevel;
  sexual: boolean;
  /**
   * img2img of a photographed face above intensity 0 is refused unless this is true AND the
   * request carries a consent attestation reference (stored in the audit log).
   */
  consentWorkflow: boolean;
}

export interface ProtectedPerson {
  name: string;
  aliases?: string[];
}

export interface OutputChecksPolicy {
  nsfw: {
    thresholds: { porn: number; hentai: number; sexy: number };
    action: 'block' | 'blur';
  };
  minFaceAge: number;
  likeness: { cosineThreshold: number };
  /** Face-detector confidence below which a detection is not treated as a face. */
  minFaceScore: number;
  /** nsfwjs Neutral+Sexy+Porn at or above which an init image counts as a photograph. */
  photoThreshold: number;
}

export interface Policy {
  version: 1;
  categories: {
    sexual: { enabled: boolean };
    graphic_injury: { levels: [LevelSettings, LevelSettings, LevelSettings, LevelSettings] };
  };
  roles: Record<string, RolePolicy>;
  protectedPersons: ProtectedPerson[];
  semantic: { enabled: boolean; thresholds: Partial<Record<Category, number>> };
  outputChecks: OutputChecksPolicy;
  audit: { promptStorage: 'text' | 'hash'; saltEnv: string };
  /** Where it was loaded from (for messages and the audit log). */
  source: string;
}

export const DEFAULT_POLICY_PATH = new URL('./default-policy.yaml', import.meta.url);

type Json = unknown;

class Checker {
  constructor(private readonly source: string) {}

  fail(path: string, message: string, hint?: string): never {
    throw new RedlineError('bad_policy', `Policy ${this.source}: ${path}: ${message}`, hint);
  }

  object(v: Json, path: string, allowed: readonly string[]): Record<string, Json> {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) this.fail(path, `expected a mapping, got ${describe(v)}.`);
    for (const k of Object.keys(v)) {
      if (!allowed.includes(k)) this.fail(`${path}.${k}`, `unknown field.`, `Allowed here: ${allowed.join(', ')}.`);
    }
    return v as Record<string, Json>;
  }

  number(v: Json, path: string, min: number, max: number): number {
    if (typeof v !== 'number' || !Number.isFinite(v)) this.fail(path, `expected a number, got ${describe(v)}.`);
    if (v < min || v > max) this.fail(path, `${v} is outside ${min}..${max}.`);
    return v;
  }

  int(v: Json, path: string, min: number, max: number): number {
    const n = this.number(v, path, min, max);
    if (!Number.isInteger(n)) this.fail(path, `expected a whole number, got ${n}.`);
    return n;
  }

  bool(v: Json, path: string): boolean {
    if (typeof v !== 'boolean') this.fail(path, `expected true or false, got ${describe(v)}.`);
    return v;
  }

  string(v: Json, path: string): string {
    if (typeof v !== 'string' || v.trim() === '') this.fail(path, `expected a non-empty string, got ${describe(v)}.`);
    return v;
  }

  oneOf<T extends string>(v: Json, path: string, options: readonly T[]): T {
    if (typeof v !== 'string' || !options.includes(v as T)) {
      this.fail(path, `expected one of ${options.join(', ')}, got ${describe(v)}.`);
    }
    return v as T;
  }
}

function describe(v: Json): string {
  if (v === null) return 'null';
  if (v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return `${typeof v} ${JSON.stringify(v)}`;
}

const SLD_KEYS = ['sld_guidance_scale', 'sld_warmup_steps', 'sld_threshold', 'sld_momentum_scale', 'sld_mom_beta'] as const;

function checkSld(c: Checker, v: Json, path: string): SldSetting {
  if (typeof v === 'string') return c.oneOf(v, path, ['off', ...Object.keys(SLD_PRESETS)] as ('off' | keyof typeof SLD_PRESETS)[]);
  const o = c.object(v, path, SLD_KEYS);
  for (const k of SLD_KEYS) if (!(k in o)) c.fail(`${path}.${k}`, 'missing.', `Give all of ${SLD_KEYS.join(', ')} or a preset name.`);
  return {
    sld_guidance_scale: c.number(o.sld_guidance_scale, `${path}.sld_guidance_scale`, 0, 1e6),
    sld_warmup_steps: c.int(o.sld_warmup_steps, `${path}.sld_warmup_steps`, 0, 10_000),
    sld_threshold: c.number(o.sld_threshold, `${path}.sld_threshold`, -1e6, 1e6),
    sld_momentum_scale: c.number(o.sld_momentum_scale, `${path}.sld_momentum_scale`, 0, 1e6),
    sld_mom_beta: c.number(o.sld_mom_beta, `${path}.sld_mom_beta`, 0, 1),
  };
}

/** Validates a parsed policy document; every error names the offending field's path. */
export function validatePolicy(doc: Json, source: string): Policy {
  const c = new Checker(source);
  const root = c.object(doc, 'policy', ['version', 'categories', 'roles', 'protectedPersons', 'semantic', 'outputChecks', 'audit']);
  if (root.version !== 1) c.fail('policy.version', `expected 1, got ${describe(root.version)}.`);

  // Categories: the two configurable ones, plus hard-blocked ones that may only restate "enabled: false".
  const catsIn = c.object(root.categories, 'policy.categories', ALL_CATEGORIES);
  for (const name of Object.keys(catsIn)) {
    if (!isHardBlocked(name)) continue;
    const path = `policy.categories.${name}`;
    const entry = catsIn[name];
    const enabled = typeof entry === 'object' && entry !== null ? (entry as Record<string, Json>).enabled : entry;
    if (enabled !== false) {
      c.fail(path, `'${name}' is a hard-blocked category and cannot be enabled or configured by any policy.`,
        `Remove it from the policy; hard-blocked categories (${HARD_BLOCKED_CATEGORIES.join(', ')}) are always refused.`);
    }
  }
  const sexualIn = c.object(catsIn.sexual, 'policy.categories.sexual', ['enabled']);
  const sexual = { enabled: c.bool(sexualIn.enabled, 'policy.categories.sexual.enabled') };
  const gi = c.object(catsIn.graphic_injury, 'policy.categories.graphic_injury', ['levels']);
  if (!Array.isArray(gi.levels) || gi.levels.length !== 4) {
    c.fail('policy.categories.graphic_injury.levels', `expected a list of 4 levels (0..3), got ${describe(gi.levels)}${Array.isArray(gi.levels) ? ` of ${gi.levels.length}` : ''}.`);
  }
  const levels = (gi.levels as Json[]).map((lv: Json, i: number) => {
    const path = `policy.categories.graphic_injury.levels[${i}]`;
    const o = c.object(lv, path, ['level', 'adapterStrength', 'cfgScaleMax', 'sldWhenClamped']);
    if (o.level !== i) c.fail(`${path}.level`, `expected ${i} (levels are listed 0, 1, 2, 3 in order), got ${describe(o.level)}.`);
    const settings: LevelSettings = {
      level: i as IntensityLevel,
      adapterStrength: c.number(o.adapterStrength, `${path}.adapterStrength`, 0, 2),
      sldWhenClamped: checkSld(c, o.sldWhenClamped, `${path}.sldWhenClamped`),
    };
    if (o.cfgScaleMax !== undefined) settings.cfgScaleMax = c.number(o.cfgScaleMax, `${path}.cfgScaleMax`, 1, 50);
    return settings;
  }) as Policy['categories']['graphic_injury']['levels'];
  if (levels[0].adapterStrength !== 0) {
    c.fail('policy.categories.graphic_injury.levels[0].adapterStrength', 'level 0 means no graded content: its adapter strength must be 0.');
  }
  for (let i = 1; i < 4; i++) {
    if (levels[i]!.adapterStrength < levels[i - 1]!.adapterStrength) {
      c.fail(`policy.categories.graphic_injury.levels[${i}].adapterStrength`, 'strengths must not decrease from one level to the next.');
    }
  }

  // Roles.
  if (typeof root.roles !== 'object' || root.roles === null || Array.isArray(root.roles)) c.fail('policy.roles', `expected a mapping, got ${describe(root.roles)}.`);
  const rolesIn = root.roles as Record<string, Json>;
  const roles: Record<string, RolePolicy> = {};
  for (const r of REQUIRED_ROLES) if (!(r in rolesIn)) c.fail(`policy.roles.${r}`, 'missing.', `Every policy defines ${REQUIRED_ROLES.join(', ')}.`);
  for (const [name, v] of Object.entries(rolesIn)) {
    const path = `policy.roles.${name}`;
    if (!/^[a-z][a-z0-9_-]{0,31}$/.test(name)) c.fail(path, 'role names are lower-case letters, digits, - and _.');
    const o = c.object(v, path, ['maxIntensity', 'sexual', 'consentWorkflow']);
    const role: RolePolicy = {
      maxIntensity: c.int(o.maxIntensity, `${path}.maxIntensity`, 0, 3) as IntensityLevel,
      sexual: o.sexual === undefined ? false : c.bool(o.sexual, `${path}.sexual`),
      consentWorkflow: o.consentWorkflow === undefined ? false : c.bool(o.consentWorkflow, `${path}.consentWorkflow`),
    };
    if (role.sexual && !sexual.enabled) {
      c.fail(`${path}.sexual`, 'a role cannot allow sexual content while policy.categories.sexual.enabled is false.');
    }
    roles[name] = role;
  }

  // Protected persons.
  const pp = root.protectedPersons ?? [];
  if (!Array.isArray(pp)) c.fail('policy.protectedPersons', `expected a list, got ${describe(pp)}.`);
  const protectedPersons: ProtectedPerson[] = (pp as Json[]).map((p: Json, i: number) => {
    const path = `policy.protectedPersons[${i}]`;
    if (typeof p === 'string') return { name: c.string(p, path) };
    const o = c.object(p, path, ['name', 'aliases']);
    const person: ProtectedPerson = { name: c.string(o.name, `${path}.name`) };
    if (o.aliases !== undefined) {
      if (!Array.isArray(o.aliases)) c.fail(`${path}.aliases`, `expected a list, got ${describe(o.aliases)}.`);
      person.aliases = (o.aliases as Json[]).map((a: Json, j: number) => c.string(a, `${path}.aliases[${j}]`));
    }
    return person;
  });

  // Semantic layer.
  const sem = c.object(root.semantic, 'policy.semantic', ['enabled', 'thresholds']);
  const thrIn = c.object(sem.thresholds, 'policy.semantic.thresholds', ALL_CATEGORIES);
  const thresholds: Partial<Record<Category, number>> = {};
  for (const [k, v] of Object.entries(thrIn)) thresholds[k as Category] = c.number(v, `policy.semantic.thresholds.${k}`, -1, 1);
  const semantic = { enabled: c.bool(sem.enabled, 'policy.semantic.enabled'), thresholds };

  // Output checks.
  const oc = c.object(root.outputChecks, 'policy.outputChecks', ['nsfw', 'minFaceAge', 'likeness', 'minFaceScore', 'photoThreshold']);
  const nsfw = c.object(oc.nsfw, 'policy.outputChecks.nsfw', ['thresholds', 'action']);
  const nt = c.object(nsfw.thresholds, 'policy.outputChecks.nsfw.thresholds', ['porn', 'hentai', 'sexy']);
  const lk = c.object(oc.likeness, 'policy.outputChecks.likeness', ['cosineThreshold']);
  const outputChecks: OutputChecksPolicy = {
    nsfw: {
      thresholds: {
        porn: c.number(nt.porn, 'policy.outputChecks.nsfw.thresholds.porn', 0, 1),
        hentai: c.number(nt.hentai, 'policy.outputChecks.nsfw.thresholds.hentai', 0, 1),
        sexy: c.number(nt.sexy, 'policy.outputChecks.nsfw.thresholds.sexy', 0, 1),
      },
      action: c.oneOf(nsfw.action, 'policy.outputChecks.nsfw.action', ['block', 'blur'] as const),
    },
    minFaceAge: oc.minFaceAge === undefined ? 25 : c.number(oc.minFaceAge, 'policy.outputChecks.minFaceAge', 18, 100),
    likeness: { cosineThreshold: c.number(lk.cosineThreshold, 'policy.outputChecks.likeness.cosineThreshold', 0, 1) },
    minFaceScore: oc.minFaceScore === undefined ? 0.3 : c.number(oc.minFaceScore, 'policy.outputChecks.minFaceScore', 0, 1),
    photoThreshold: oc.photoThreshold === undefined ? 0.5 : c.number(oc.photoThreshold, 'policy.outputChecks.photoThreshold', 0, 1),
  };

  // Audit.
  const au = c.object(root.audit, 'policy.audit', ['promptStorage', 'saltEnv']);
  const audit = {
    promptStorage: c.oneOf(au.promptStorage, 'policy.audit.promptStorage', ['text', 'hash'] as const),
    saltEnv: au.saltEnv === undefined ? 'REDLINE_AUDIT_SALT' : c.string(au.saltEnv, 'policy.audit.saltEnv'),
  };

  return {
    version: 1, categories: { sexual, graphic_injury: { levels } }, roles, protectedPersons, semantic, outputChecks, audit, source,
  };
}

/** Parses policy text (YAML, of which JSON is a subset). */
export function parsePolicy(text: string, source: string): Policy {
  let doc: Json;
  try {
    doc = parseYaml(text, { uniqueKeys: true });
  } catch (err) {
    const where = err instanceof YAMLParseError && err.linePos ? ` at line ${err.linePos[0].line}` : '';
    throw new RedlineError('bad_policy', `Policy ${source}: not valid YAML/JSON${where}: ${(err as Error).message.split('\n')[0]}`);
  }
  return validatePolicy(doc, source);
}

export function loadPolicy(path?: string): Policy {
  if (!path) return defaultPolicy();
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new RedlineError('policy_unreadable', `Cannot read policy file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}.`,
      'Pass an existing YAML or JSON policy file, or omit --policy for the default.');
  }
  const ext = extname(path).toLowerCase();
  if (ext && !['.yaml', '.yml', '.json'].includes(ext)) {
    throw new RedlineError('bad_policy', `Policy ${path}: unsupported file type '${ext}'.`, 'Use .yaml, .yml or .json.');
  }
  return parsePolicy(text, path);
}

let cachedDefault: Policy | undefined;

export function defaultPolicy(): Policy {
  cachedDefault ??= parsePolicy(readFileSync(DEFAULT_POLICY_PATH, 'utf8'), 'default-policy.yaml');
  return structuredClone(cachedDefault);
}

export function roleOf(policy: Policy, role: string): RolePolicy {
  const r = policy.roles[role];
  if (!r) {
    throw new RedlineError('unknown_role', `Unknown role '${role}' in policy ${policy.source}.`,
      `Roles defined: ${Object.keys(policy.roles).join(', ')}.`);
  }
  return r;
}

/** Calibration of intensity levels to adapter strength, from an adapter's sidecar JSON. */
export interface AdapterCalibration {
  /** Strength for levels 1..3 (level 0 is always strength 0). */
  levelStrengths: { 1: number; 2: number; 3: number };
}

/**
 * Reads the calibration from an adapter sidecar object, in the adapter registry's sidecar
 * format (src/adapters/registry.ts, written by the trainer):
 * `{ "category": "graphic-injury", "intensity": { "1": 0.3, "2": 0.6, "3": 0.9 } }`.
 * Returns undefined when the sidecar calibrates no level; a partial or decreasing table is
 * an error, since the policy's levels must mean the same across adapters.
 */
const CALIBRATION_HINT = 'A graded adapter is refused until its sidecar calibrates levels 1, 2 and 3: restore the sidecar from the adapter\'s release or re-run its calibration.';

export function calibrationFromSidecar(sidecar: unknown, source = 'sidecar'): AdapterCalibration | undefined {
  if (typeof sidecar !== 'object' || sidecar === null) return undefined;
  const levels = (sidecar as Record<string, unknown>).intensity;
  if (levels === undefined) return undefined;
  const get = (l: number): number => {
    const v = typeof levels === 'object' && levels !== null ? (levels as Record<string, unknown>)[String(l)] : undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || v > 2) {
      throw new RedlineError('bad_calibration', `${source}: intensity.${l} must be a strength between 0 and 2, got ${JSON.stringify(v)}.`, CALIBRATION_HINT);
    }
    return v;
  };
  const s = { 1: get(1), 2: get(2), 3: get(3) };
  if (s[1] > s[2] || s[2] > s[3]) {
    throw new RedlineError('bad_calibration', `${source}: calibrated strengths must not decrease from level 1 to 3.`, CALIBRATION_HINT);
  }
  return { levelStrengths: s };
}

export interface GenerationSettings {
  effectiveIntensity: IntensityLevel;
  adapterStrength: number;
  /** Where the strength came from. */
  strengthSource: 'calibration' | 'policy';
  cfgScaleMax?: number;
  /** SLD parameters when the request was clamped (or level 0 is in force over a graded ask). */
  sld?: SldParams;
}

/** The generation settings for an effective level, given what the prompt asked for. */
export function generationSettings(
  policy: Policy, requested: IntensityLevel, effective: IntensityLevel, calibration?: AdapterCalibration,
): GenerationSettings {
  const lv = policy.categories.graphic_injury.levels[effective];
  const out: GenerationSettings = {
    effectiveIntensity: effective,
    adapterStrength: effective === 0 ? 0 : calibration ? calibration.levelStrengths[effective as 1 | 2 | 3] : lv.adapterStrength,
    strengthSource: calibration && effective > 0 ? 'calibration' : 'policy',
  };
  if (lv.cfgScaleMax !== undefined) out.cfgScaleMax = lv.cfgScaleMax;
  if (requested > effective && lv.sldWhenClamped !== 'off') {
    out.sld = typeof lv.sldWhenClamped === 'string' ? { ...SLD_PRESETS[lv.sldWhenClamped] } : { ...lv.sldWhenClamped };
  }
  return out;
}
