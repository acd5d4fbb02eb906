// C2PA manifests for PNG, written and read with @trustnxt/c2pa-ts: a `c2pa.actions.v2`
// assertion (`c2pa.created`, digitalSourceType trainedAlgorithmicMedia, softwareAgent
// Redline), Redline's own assertion with the model and adapter hashes, and the data-hash
// hard binding over every byte of the file except the manifest's own caBX chunk.
import { randomUUID } from 'node:crypto';
import { PNG } from '@trustnxt/c2pa-ts/asset';
import { CBORBox, SuperBox, type IBox } from '@trustnxt/c2pa-ts/jumbf';
import {
  ActionAssertion,
  Assertion,
  ClaimVersion,
  DataHashAssertion,
  DigitalSourceType,
  ManifestStore,
  Signature,
  ValidationStatusCode,
  type ValidationStatusEntry,
} from '@trustnxt/c2pa-ts/manifest';
import * as x509 from '@peculiar/x509';
import { RedlineError } from '../../errors.ts';
import { subjectName, type SigningIdentity } from './identity.ts';

export const REDLINE_ASSERTION_LABEL = 'org.redline.generation';
export const SOFTWARE_AGENT = 'Redline';

/** What Redline records about how an image was made. Hashes as 'sha256:<hex>' or A1111 short hashes. */
export interface GenerationRecord {
  modelHash: string;
  adapterHashes: Record<string, string>;
  /** The invisible watermark's method and length, so a checker knows how many bits to read. */
  watermark?: { method: 'dwtDct'; bits: number; scale: number };
}

/** JUMBF content type of CBOR assertions (C2PA 2.1, 11.1). */
const CBOR_ASSERTION_UUID = new Uint8Array(Buffer.from('63626f7200110010800000aa00389b71', 'hex'));
/**
 * Room kept for the signature in the manifest, in bytes. c2pa-ts reserves 25 kB by default
 * so an RFC 3161 timestamp fits; Redline signs without a timestamp authority (offline), and
 * an ES256 signature is 64 bytes.
 */
const SIGNATURE_PADDING = 1024;

/** Redline's assertion: CBOR content under a reverse-domain label, as C2PA allows for custom assertions. */
class RedlineAssertion extends Assertion {
  override label = REDLINE_ASSERTION_LABEL;
  override uuid = CBOR_ASSERTION_UUID;
  record: GenerationRecord | undefined;

  readContentFromJUMBF(box: IBox): void {
    if (!(box instanceof CBORBox)) throw new Error('Redline assertion is not CBOR');
    this.record = box.content as GenerationRecord;
  }

  generateJUMBFBoxForContent(): IBox {
    if (!this.record) throw new Error('Redline assertion has no content');
    const box = new CBORBox();
    const { modelHash, adapterHashes, watermark } = this.record;
    box.content = {
      model: { hash: modelHash },
      adapters: Object.entries(adapterHashes).map(([name, hash]) => ({ name, hash })),
      ...(watermark ? { watermark } : {}),
    };
    return box;
  }
}

/** Signs `png` (which must already carry every other chunk: the hash binding covers them). */
export async function signPng(png: Uint8Array<ArrayBuffer>, record: GenerationRecord, identity: SigningIdentity, softwareVersion: string): Promise<Buffer> {
  if (!PNG.canRead(png)) throw new RedlineError('not_png', 'C2PA signing needs a PNG.', 'Pass a PNG image.');
  const asset = new PNG(png);
  if (asset.getManifestJUMBF()) {
    throw new RedlineError('c2pa_already_signed', 'The PNG already carries a C2PA manifest.', 'Sign the image once, when Redline writes it.');
  }
  const store = new ManifestStore();
  const manifest = store.createManifest({
    claimVersion: ClaimVersion.V2,
    assetFormat: 'image/png',
    instanceID: `xmp:iid:${randomUUID()}`,
    defaultHashAlgorithm: 'SHA-256',
    signer: identity.signer,
  });
  manifest.claim!.claimGeneratorName = SOFTWARE_AGENT;
  manifest.claim!.claimGeneratorVersion = softwareVersion;
  manifest.signature = Signature.create(identity.signer, SIGNATURE_PADDING);
  const actions = new ActionAssertion();
  actions.actions = [
    {
      action: 'c2pa.created' as ActionAssertion['actions'][number]['action'],
      digitalSourceType: DigitalSourceType.TrainedAlgorithmicMedia,
      softwareAgent: { name: SOFTWARE_AGENT, version: softwareVersion },
    },
  ];
  manifest.addAssertion(actions);
  const redline = new RedlineAssertion();
  redline.record = record;
  manifest.addAssertion(redline);
  const dataHash = DataHashAssertion.create('SHA-256');
  manifest.addAssertion(dataHash);
  // Space first (the caBX chunk's position and size enter the exclusion range), then the
  // hash over the final byte layout, then the signature over the claim.
  await asset.ensureManifestSpace(store.measureSize());
  await dataHash.updateWithAsset(asset);
  await manifest.sign(identity.signer);
  await asset.writeManifestJUMBF(store.getBytes());
  return Buffer.from(await asset.getDataRange());
}

export interface C2paReport {
  present: boolean;
  /** The claim signature verifies against the certificate in the manifest. */
  signatureValid: boolean;
  /** The data hash over the file matches (the pixels and other chunks are unchanged). */
  hashBindingValid: boolean;
  /** Every check c2pa-ts made passed (assertion hashes, actions, binding, signature). */
  valid: boolean;
  signer?: { commonName: string; subject: string; issuer: string; notAfter: string };
  /** Whether the signer chains to one of the given trust anchors (e.g. the local CA). */
  trusted: boolean;
  digitalSourceType?: string;
  softwareAgent?: string;
  generation?: GenerationRecord;
  /** c2pa-ts status codes that failed, for diagnosis. */
  failures: ValidationStatusEntry[];
  error?: string;
}

function empty(partial: Partial<C2paReport> = {}): C2paReport {
  return { present: false, signatureValid: false, hashBindingValid: false, valid: false, trusted: false, failures: [], ...partial };
}

async function chainsTo(leaf: x509.X509Certificate, chain: x509.X509Certificate[], anchors: x509.X509Certificate[]): Promise<boolean> {
  if (anchors.length === 0) return false;
  const builder = new x509.X509ChainBuilder({ certificates: [...chain, ...anchors] });
  const built = await builder.build(leaf);
  const root = built.at(-1);
  if (!root || !anchors.some((a) => a.equal(root))) return false;
  const now = new Date();
  for (let i = 0; i < built.length - 1; i++) {
    if (!(await built[i]!.verify({ publicKey: built[i + 1]!.publicKey, date: now }))) return false;
  }
  return built[0]!.equal(leaf);
}

/** Reads and validates the active manifest of a PNG. Never throws for a bad manifest: it reports. */
export async function checkC2pa(png: Uint8Array<ArrayBuffer>, trustAnchors: x509.X509Certificate[] = []): Promise<C2paReport> {
  if (!PNG.canRead(png)) return empty({ error: 'not a PNG' });
  let jumbf: Uint8Array | undefined;
  let asset: PNG;
  try {
    asset = new PNG(png);
    jumbf = asset.getManifestJUMBF();
  } catch (e) {
    return empty({ error: `unreadable PNG structure: ${(e as Error).message}` });
  }
  if (!jumbf) return empty();
  let store: ManifestStore;
  try {
    store = ManifestStore.read(SuperBox.fromBuffer(new Uint8Array(jumbf)));
  } catch (e) {
    return empty({ present: true, error: `malformed manifest store: ${(e as Error).message}` });
  }
  const manifest = store.getActiveManifest();
  let result;
  try {
    result = await store.validate(asset);
  } catch (e) {
    return empty({ present: true, error: `validation failed: ${(e as Error).message}` });
  }
  const has = (code: ValidationStatusCode) => result.statusEntries.some((s) => s.code === code && s.success !== false);
  const report = empty({
    present: true,
    valid: result.isValid,
    signatureValid: has(ValidationStatusCode.ClaimSignatureValidated),
    hashBindingValid: has(ValidationStatusCode.AssertionDataHashMatch),
    failures: result.statusEntries.filter((s) => s.success === false),
  });
  const sig = manifest?.signature?.signatureData;
  if (sig?.certificate) {
    report.signer = {
      commonName: subjectName(sig.certificate),
      subject: sig.certificate.subject,
      issuer: sig.certificate.issuer,
      notAfter: sig.certificate.notAfter.toISOString(),
    };
    report.trusted = report.signatureValid && (await chainsTo(sig.certificate, sig.chainCertificates, trustAnchors));
  }
  for (const assertion of manifest?.assertions?.assertions ?? []) {
    if (assertion instanceof ActionAssertion) {
      const created = assertion.actions.find((a) => a.action === 'c2pa.created');
      if (created) {
        report.digitalSourceType = created.digitalSourceType;
        report.softwareAgent = created.softwareAgent?.name;
      }
    } else if (assertion.label === REDLINE_ASSERTION_LABEL && assertion.sourceBox) {
      const content = assertion.sourceBox.contentBoxes[0];
      if (content instanceof CBORBox) {
        const raw = content.content as { model?: { hash?: string }; adapters?: { name: string; hash: string }[]; watermark?: GenerationRecord['watermark'] };
        report.generation = {
          modelHash: raw.model?.hash ?? '',
          adapterHashes: Object.fromEntries((raw.adapters ?? []).map((a) => [a.name, a.hash])),
          ...(raw.watermark ? { watermark: raw.watermark } : {}),
        };
      }
    }
  }
  return report;
}
