// An adapter whose calibration sidecar exists but cannot be used is refused, never run
// ungraded; so is one whose metadata declares a category that no sidecar matches. A plain
// LoRA without a sidecar stays usable.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  assertAdapterUsable, CATEGORY_METADATA_KEY, listAdapters, readSidecar, type AdapterListing,
} from '../../src/adapters/registry.ts';
import { BROKEN_SIDECARS, VALID_GRADED_SIDECAR, writeAdapter, writeBrokenAdapters, writeTinyLora } from './sidecar-fixtures.ts';
import { refusalOf } from '../helpers/errors.ts';

const dir = mkdtempSync(join(tmpdir(), 'redline-sidecar-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

writeBrokenAdapters(dir);
writeAdapter(dir, 'plain');
writeAdapter(dir, 'graded', VALID_GRADED_SIDECAR);
// Windows editors save with a byte-order mark; that is still the same JSON.
writeTinyLora(join(dir, 'bom.safetensors'));
writeFileSync(join(dir, 'bom.json'), `\uFEFF${JSON.stringify(VALID_GRADED_SIDECAR)}`);
writeAdapter(dir, 'extra', { ...VALID_GRADED_SIDECAR, trainer: 'v9' });
// Category declared in the safetensors metadata
writeAdapter(dir, 'declared-nosidecar', undefined, { [CATEGORY_METADATA_KEY]: 'graphic-injury' });
writeAdapter(dir, 'declared-other', { category: 'style' }, { [CATEGORY_METADATA_KEY]: 'graphic-injury' });
writeAdapter(dir, 'declared-bad', undefined, { [CATEGORY_METADATA_KEY]: 'Graphic Injury!' });
writeAdapter(dir, 'declared-ok', VALID_GRADED_SIDECAR, { [CATEGORY_METADATA_KEY]: 'graphic-injury' });


describe('readSidecar refuses a sidecar that exists but cannot be used', () => {
  for (const c of BROKEN_SIDECARS) {
    it(`${c.name}: refused with a message naming ${c.name}.json and the problem, and a hint`, () => {
      const err = refusalOf(() => readSidecar(join(dir, `${c.name}.safetensors`)));
      expect(err.code).toBe('adapter_sidecar_invalid');
      expect(err.message).toContain(`Adapter "${c.name}" is refused: its sidecar ${c.name}.json`);
      expect(err.message).toMatch(c.problem);
      expect(err.hint).toMatch(/Restore .*\.json/);
      // server paths stay out of what API callers see
      expect(err.message).not.toContain(dir);
    });
  }

  it('a plain LoRA without a sidecar is fine', () => {
    expect(readSidecar(join(dir, 'plain.safetensors'))).toEqual({ sidecar: null, problems: [] });
  });

  it('a valid graded sidecar is read as written, with or without a byte-order mark', () => {
    expect(readSidecar(join(dir, 'graded.safetensors')).sidecar).toEqual(VALID_GRADED_SIDECAR);
    expect(readSidecar(join(dir, 'bom.safetensors')).sidecar).toEqual(VALID_GRADED_SIDECAR);
  });

  it('an unknown field is a warning, not a refusal', () => {
    const r = readSidecar(join(dir, 'extra.safetensors'));
    expect(r.sidecar).toEqual(VALID_GRADED_SIDECAR);
    expect(r.problems).toEqual(['sidecar field "trainer" is not known and was ignored']);
  });
});

describe('a category declared in the safetensors metadata needs its sidecar', () => {
  it('declared graded with no sidecar: refused', () => {
    const err = refusalOf(() => readSidecar(join(dir, 'declared-nosidecar.safetensors')));
    expect(err.code).toBe('adapter_sidecar_missing');
    expect(err.message).toMatch(/"declared-nosidecar" is refused: its metadata declares the category "graphic-injury" but it has no sidecar declared-nosidecar\.json/);
    expect(err.hint).toMatch(/declared-nosidecar\.json/);
  });
  it('declared graded, sidecar says otherwise (a category Redline does not know): refused', () => {
    const err = refusalOf(() => readSidecar(join(dir, 'declared-other.safetensors')));
    expect(err.code).toBe('adapter_category_unknown');
    expect(err.message).toMatch(/its sidecar declared-other\.json declares the category "style", which Redline does not know/);
  });
  it('a declared value that is not a category: refused', () => {
    expect(refusalOf(() => readSidecar(join(dir, 'declared-bad.safetensors'))).code).toBe('adapter_category_invalid');
  });
  it('declared and matched by the sidecar: usable', () => {
    expect(readSidecar(join(dir, 'declared-ok.safetensors')).sidecar).toEqual(VALID_GRADED_SIDECAR);
  });
});

describe('listAdapters marks refused adapters; using one throws the same refusal', async () => {
  const list = await listAdapters(dir, { hashes: false });
  const by = (name: string): AdapterListing => list.find((a) => a.name === name)!;
  const refusedNames = [...BROKEN_SIDECARS.map((c) => c.name), 'declared-nosidecar', 'declared-other', 'declared-bad'].sort();

  it('every broken or undeclared adapter, and only those, carries a refusal and no sidecar', () => {
    expect(list.filter((a) => a.refusal).map((a) => a.name).sort()).toEqual(refusedNames);
    for (const name of refusedNames) expect(by(name).sidecar).toBeNull();
    expect(by('plain').refusal).toBeNull();
    expect(by('graded').sidecar).toEqual(VALID_GRADED_SIDECAR);
  });

  it('the refusal matches what readSidecar throws, and assertAdapterUsable throws it', () => {
    for (const c of BROKEN_SIDECARS) {
      const listed = by(c.name);
      expect(listed.refusal!.message).toMatch(c.problem);
      expect(listed.warnings).toContain(listed.refusal!.message);
      const err = refusalOf(() => assertAdapterUsable(listed));
      expect(err.code).toBe('adapter_sidecar_invalid');
      expect(err.hint).toBe(listed.refusal!.hint);
    }
    expect(() => assertAdapterUsable(by('plain'))).not.toThrow();
  });
});
