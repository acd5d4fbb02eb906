import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { deflateSync, inflateSync } from 'node:zlib';
import { Reader, createTrustSettings, createVerifySettings, mergeSettings, settingsToJson } from '@contentauth/c2pa-node';
import * as x509 from '@peculiar/x509';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import * as provenanceCommand from '../../../src/cli/commands/provenance.ts';
import { RedlineError } from '../../../src/errors.ts';
import { applyProvenance, checkProvenance, loadSigningIdentity, type SigningIdentity } from '../../../src/safety/provenance/index.ts';
import { readChunks, writeChunks } from '../../../src/safety/provenance/png.ts';
import { repoRoot } from '../../helpers/golden.ts';
import { gradientPng, shapesPng } from './images.ts';

const IPTC_TRAINED = 'http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia';
const PAYLOAD = new Uint8Array(Buffer.from('5265646c696e', 'hex'));
const INFOTEXT = 'concept art of a foggy harbour\nNegative prompt: text\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x512, Model hash: 0123456789';

let dataDir: string;
let identity: SigningIdentity;
let created: string[];
let signed: Buffer;

/**
 * Changes one byte of pixel data: inflates the image data, adds 1 to one sample in the
 * middle of the image, deflates it again. Every other chunk stays as it was, and the file
 * stays a valid PNG.
 */
function tamperPixels(png: Buffer): Buffer {
  const chunks = readChunks(Buffer.from(png));
  const first = chunks.findIndex((c) => c.type === 'IDAT');
  const idats = chunks.filter((c) => c.type === 'IDAT');
  const raw = inflateSync(Buffer.concat(idats.map((c) => c.data)));
  const stride = raw.length / 512; // 512 rows, each a filter byte plus samples
  const at = 256 * stride + 1 + 3 * 256;
  raw[at] = (raw[at]! + 1) & 0xff;
  const rest = chunks.filter((c) => c.type !== 'IDAT');
  rest.splice(first, 0, { type: 'IDAT', data: deflateSync(raw) });
  return writeChunks(rest);
}

async function c2paNodeRead(file: Buffer, trustCaPem?: string) {
  const settings = trustCaPem
    ? settingsToJson(mergeSettings(createTrustSettings({ verifyTrustList: true, trustAnchors: trustCaPem }), createVerifySettings({ verifyTrust: true })))
    : undefined;
  const reader = await Reader.fromAsset({ buffer: file, mimeType: 'image/png' }, settings);
  expect(reader).not.toBeNull();
  return reader!.json() as unknown as {
    active_manifest: string;
    manifests: Record<string, {
      assertions: { label: string; data: Record<string, unknown> }[];
      signature_info: { common_name: string; alg: string };
      claim_generator_info: { name: string; version?: string }[];
    }>;
    validation_state: string;
    validation_results: { activeManifest: { success: { code: string }[]; failure: { code: string }[] } };
  };
}

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), 'redline-prov-'));
  created = [];
  identity = await loadSigningIdentity({ dataDir, onCreate: (m) => created.push(m) });
  signed = await applyProvenance(await shapesPng(), {
    infotext: INFOTEXT,
    modelHash: 'sha256:6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa',
    adapterHashes: { blood_framework: 'sha256:1f3e0a4d5b6c7d8e9f00112233445566778899aabbccddeeff00112233445566' },
    payload: PAYLOAD,
    identity,
  });
});

afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

describe('local signing identity', () => {
  it('is created on first use, said so, and kept private', () => {
    expect(created).toHaveLength(1);
    expect(created[0]).toContain(join(dataDir, 'c2pa'));
    expect(created[0]).toMatch(/created a local signing identity/);
    expect(statSync(join(dataDir, 'c2pa', 'signer.key')).mode & 0o777).toBe(0o600);
    expect(identity.origin).toBe('local');
  });

  it('is reused on later runs without a message', async () => {
    const again: string[] = [];
    const second = await loadSigningIdentity({ dataDir, onCreate: (m) => again.push(m) });
    expect(again).toEqual([]);
    expect(second.certificate.serialNumber).toBe(identity.certificate.serialNumber);
  });

  it('ends up as one identity when several processes create it at once', async () => {
    const raceDir = mkdtempSync(join(tmpdir(), 'redline-prov-race-'));
    try {
      const messages: string[] = [];
      const ids = await Promise.all([1, 2, 3].map(() => loadSigningIdentity({ dataDir: raceDir, onCreate: (m) => messages.push(m) })));
      expect(messages).toHaveLength(1);
      expect(new Set(ids.map((i) => i.certificate.serialNumber)).size).toBe(1);
      expect(readdirSync(raceDir)).toEqual(['c2pa']);
    } finally {
      rmSync(raceDir, { recursive: true, force: true });
    }
  });

  it('has a leaf certificate with the C2PA profile: end entity, digitalSignature, documentSigning EKU, issued by the local CA', async () => {
    const cert = identity.certificate;
    expect(cert.getExtension(x509.BasicConstraintsExtension)?.ca).toBe(false);
    const ku = cert.getExtension(x509.KeyUsagesExtension)!;
    expect(ku.critical).toBe(true);
    expect(ku.usages & x509.KeyUsageFlags.digitalSignature).toBeTruthy();
    expect(ku.usages & x509.KeyUsageFlags.keyCertSign).toBeFalsy();
    expect(cert.getExtension(x509.ExtendedKeyUsageExtension)!.usages).toContain('1.3.6.1.5.5.7.3.36');
    const ca = new x509.X509Certificate(readFileSync(join(dataDir, 'c2pa', 'ca.pem'), 'utf8'));
    expect(await cert.verify({ publicKey: ca.publicKey })).toBe(true);
  });

  it('refuses a configured key that does not belong to the certificate, and a half-configured identity', async () => {
    const otherDir = mkdtempSync(join(tmpdir(), 'redline-prov-other-'));
    try {
      await loadSigningIdentity({ dataDir: otherDir, onCreate: () => {} });
      const attempt = loadSigningIdentity({ certPath: join(dataDir, 'c2pa', 'signer.pem'), keyPath: join(otherDir, 'c2pa', 'signer.key') });
      await expect(attempt).rejects.toThrowError(RedlineError);
      await expect(loadSigningIdentity({ certPath: join(dataDir, 'c2pa', 'signer.pem'), keyPath: join(otherDir, 'c2pa', 'signer.key') })).rejects.toThrow(/does not belong to the certificate/);
      await expect(loadSigningIdentity({ certPath: join(dataDir, 'c2pa', 'signer.pem') })).rejects.toThrow(/both a certificate chain and a private key/);
    } finally {
      rmSync(otherDir, { recursive: true, force: true });
    }
  });
});

describe('applyProvenance + checkProvenance', () => {
  it('reports every mark on a file Redline wrote', async () => {
    const report = await checkProvenance(signed, { trustAnchors: identity.trustAnchors });
    expect(report.parameters).toEqual({ present: true, text: INFOTEXT });
    expect(report.xmp).toEqual({ present: true, digitalSourceType: IPTC_TRAINED, trainedAlgorithmicMedia: true });
    expect(report.c2pa).toMatchObject({ present: true, valid: true, signatureValid: true, hashBindingValid: true, trusted: true, failures: [] });
    expect(report.c2pa.signer?.commonName).toBe('Redline local signer');
    expect(report.c2pa.digitalSourceType).toBe(IPTC_TRAINED);
    expect(report.c2pa.softwareAgent).toBe('Redline');
    expect(report.c2pa.generation?.adapterHashes).toEqual({ blood_framework: expect.stringMatching(/^sha256:1f3e/) });
    expect(report.watermark).toMatchObject({ checked: true, present: true, bits: 48, payloadHex: '5265646c696e' });
  });

  it('writes the parameters chunk and XMP where other readers find them (libpng/libvips via sharp)', async () => {
    const meta = await sharp(signed).metadata();
    expect(meta.comments).toEqual([{ keyword: 'parameters', text: INFOTEXT }]);
    expect(meta.xmp?.toString('utf8')).toContain(`Iptc4xmpExt:DigitalSourceType="${IPTC_TRAINED}"`);
  });

  it('verifies with the C2PA reference implementation (c2pa-node / c2pa-rs)', async () => {
    const untrusted = await c2paNodeRead(signed);
    const failures = untrusted.validation_results.activeManifest.failure.map((f) => f.code);
    // Without a trust list the only complaint is the unknown issuer.
    expect(failures).toEqual(['signingCredential.untrusted']);
    const successes = untrusted.validation_results.activeManifest.success.map((s) => s.code);
    expect(successes).toEqual(expect.arrayContaining(['claimSignature.validated', 'assertion.dataHash.match']));

    const trusted = await c2paNodeRead(signed, readFileSync(join(dataDir, 'c2pa', 'ca.pem'), 'utf8'));
    expect(trusted.validation_state).toBe('Trusted');
    expect(trusted.validation_results.activeManifest.failure).toEqual([]);
    const manifest = trusted.manifests[trusted.active_manifest]!;
    expect(manifest.signature_info).toMatchObject({ common_name: 'Redline local signer', alg: 'Es256' });
    expect(manifest.claim_generator_info).toEqual([{ name: 'Redline', version: expect.stringMatching(/^\d+\.\d+\.\d+/) }]);
    const actions = manifest.assertions.find((a) => a.label === 'c2pa.actions.v2')!.data as { actions: { action: string; digitalSourceType: string; softwareAgent: { name: string } }[] };
    expect(actions.actions[0]).toMatchObject({ action: 'c2pa.created', digitalSourceType: IPTC_TRAINED, softwareAgent: { name: 'Redline' } });
    const redline = manifest.assertions.find((a) => a.label === 'org.redline.generation')!.data;
    expect(redline).toMatchObject({ model: { hash: expect.stringMatching(/^sha256:6ce0/) }, adapters: [{ name: 'blood_framework' }] });
  });

  it('one changed byte of image data breaks the hash binding, for Redline and for c2pa-node', async () => {
    const tampered = tamperPixels(signed);
    const report = await checkProvenance(tampered, { trustAnchors: identity.trustAnchors });
    expect(report.c2pa.present).toBe(true);
    expect(report.c2pa.signatureValid).toBe(true);
    expect(report.c2pa.hashBindingValid).toBe(false);
    expect(report.c2pa.valid).toBe(false);
    expect(report.c2pa.failures.map((f) => f.code)).toContain('assertion.dataHash.mismatch');
    const ref = await c2paNodeRead(tampered);
    expect(ref.validation_results.activeManifest.failure.map((f) => f.code)).toContain('assertion.dataHash.mismatch');
  });

  it('a JPEG re-encode loses the metadata marks but keeps the watermark', async () => {
    const jpeg = await sharp(signed).jpeg({ quality: 90 }).toBuffer();
    const report = await checkProvenance(jpeg, { expectedPayload: PAYLOAD });
    expect(report.format).toBe('jpeg');
    expect(report.c2pa.present).toBe(false);
    expect(report.parameters.present).toBe(false);
    expect(report.watermark.present).toBe(true);
    console.log(`signed PNG -> JPEG q90: ${report.watermark.bitErrors} of 48 watermark bits wrong`);
    expect(report.watermark.bitErrors! / 48).toBeLessThanOrEqual(0.05);
  });

  it('finds nothing on an unmarked image', async () => {
    const report = await checkProvenance(await gradientPng());
    expect(report.parameters.present).toBe(false);
    expect(report.xmp.present).toBe(false);
    expect(report.c2pa.present).toBe(false);
    expect(report.watermark.present).toBe(false);
  });

  it('refuses a watermark on an image too small to carry one unless the payload is turned off explicitly', async () => {
    const small = await gradientPng(128, 128);
    const input = { infotext: INFOTEXT, modelHash: 'sha256:00', adapterHashes: {}, identity };
    await expect(applyProvenance(small, { ...input, payload: PAYLOAD })).rejects.toThrow(/256x256/);
    const unmarked = await applyProvenance(small, { ...input, payload: null });
    const report = await checkProvenance(unmarked, { trustAnchors: identity.trustAnchors });
    expect(report.c2pa.valid).toBe(true);
    expect(report.c2pa.generation?.watermark).toBeUndefined();
    expect(report.watermark.checked).toBe(false);
  });

  it('refuses to sign twice', async () => {
    await expect(applyProvenance(signed, { infotext: 'x', modelHash: 'sha256:00', adapterHashes: {}, payload: PAYLOAD, identity })).rejects.toThrow(/already carries a C2PA manifest/);
  });
});

describe('redline provenance check', () => {
  it('prints a JSON report and exits 0 for a fully marked file, 1 for a tampered one', async () => {
    const run = promisify(execFile);
    const file = join(dataDir, 'marked.png');
    writeFileSync(file, signed);
    const { stdout } = await run(process.execPath, [join(repoRoot, 'bin', 'redline.js'), 'provenance', 'check', file, '--json', '--data-dir', dataDir]);
    const report = JSON.parse(stdout) as Awaited<ReturnType<typeof checkProvenance>>;
    expect(report.c2pa.trusted).toBe(true);
    expect(report.watermark.payloadHex).toBe('5265646c696e');
    const bad = join(dataDir, 'tampered.png');
    writeFileSync(bad, tamperPixels(signed));
    // In process (one spawn above is enough to cover bin/ and the dispatcher).
    const printed: string[] = [];
    const log = vi.spyOn(console, 'log').mockImplementation((line: string) => void printed.push(line));
    try {
      expect(await provenanceCommand.run(['check', bad, '--data-dir', dataDir])).toBe(1);
    } finally {
      log.mockRestore();
    }
    expect(printed.join('\n')).toMatch(/hash binding: +BROKEN/);
    expect(printed.join('\n')).toMatch(/watermark: +present, payload 5265646c696e/);
  });
});
