// The key and certificate chain that sign C2PA manifests. An operator configures their
// own (a PEM chain, leaf first, and a PKCS#8 P-256 key); without one, Redline creates a
// local identity on first use: a self-signed CA whose private key is thrown away after it
// has issued one ES256 signing certificate that meets the C2PA certificate profile
// (end entity, digitalSignature key usage, documentSigning/emailProtection EKU, key
// identifiers). Validators show such manifests as signed by an untrusted issuer unless
// the CA (ca.pem) is added to their trust list.
import { webcrypto } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import * as x509 from '@peculiar/x509';
import { CoseAlgorithmIdentifier, type Signer } from '@trustnxt/c2pa-ts/cose';
import { RedlineError } from '../../errors.ts';

type X509Crypto = Parameters<typeof x509.cryptoProvider.set>[0];
x509.cryptoProvider.set(webcrypto as unknown as X509Crypto);

const ES256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const OID_EMAIL_PROTECTION = '1.3.6.1.5.5.7.3.4';
const OID_DOCUMENT_SIGNING = '1.3.6.1.5.5.7.3.36';

/**
 * ES256 COSE signer. COSE (RFC 9053 2.1) wants the signature as r|s; c2pa-ts 0.9.4's
 * LocalSigner re-encodes it as ASN.1 DER, which c2pa-rs rejects ("EC signature should be
 * in P1363 r|s format"), so signing goes through WebCrypto here, which yields r|s.
 */
export class Es256Signer implements Signer {
  readonly algorithm = CoseAlgorithmIdentifier.ES256;
  constructor(
    private readonly key: webcrypto.CryptoKey,
    readonly certificate: x509.X509Certificate,
    readonly chainCertificates: x509.X509Certificate[],
  ) {}

  async sign(payload: Uint8Array): Promise<Uint8Array> {
    return new Uint8Array(await webcrypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, this.key, payload));
  }
}

export interface SigningIdentity {
  signer: Es256Signer;
  /** The signing (leaf) certificate. */
  certificate: x509.X509Certificate;
  /** Further certificates sent in the manifest's x5chain (intermediates). */
  chain: x509.X509Certificate[];
  /** Roots this Redline trusts when it checks files: the local CA, or none for a configured identity. */
  trustAnchors: x509.X509Certificate[];
  origin: 'configured' | 'local';
  /** Where the certificate came from (file path). */
  source: string;
}

export interface IdentityOptions {
  /** Redline's data directory; the local identity lives in <dataDir>/c2pa/. */
  dataDir?: string;
  /** Operator's certificate chain (PEM, leaf first). Needs `keyPath`. */
  certPath?: string;
  /** Operator's private key (PKCS#8 PEM, EC P-256). */
  keyPath?: string;
  /** Told when a local identity is created; defaults to a line on stderr. */
  onCreate?: (message: string) => void;
}

/** $REDLINE_DATA_DIR, else ~/.redline. */
export function defaultDataDir(): string {
  return resolve(process.env.REDLINE_DATA_DIR ?? join(homedir(), '.redline'));
}

function pemBlocks(pem: string, label: string): Uint8Array[] {
  const re = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`, 'g');
  return [...pem.matchAll(re)].map((m) => new Uint8Array(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64')));
}

function toPem(der: ArrayBuffer | Uint8Array, label: string): string {
  const b64 = Buffer.from(der instanceof Uint8Array ? der : new Uint8Array(der)).toString('base64');
  return `-----BEGIN ${label}-----\n${b64.replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END ${label}-----\n`;
}

async function importMatchingKey(privateKey: Uint8Array, certificate: x509.X509Certificate, source: string): Promise<webcrypto.CryptoKey> {
  let key: webcrypto.CryptoKey;
  try {
    key = await webcrypto.subtle.importKey('pkcs8', privateKey, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
  } catch {
    throw new RedlineError('c2pa_bad_key', `The C2PA signing key for ${source} is not a PKCS#8 EC P-256 key.`, 'Signing uses ES256: convert the key with `openssl pkcs8 -topk8 -nocrypt`.');
  }
  const probe = new TextEncoder().encode('redline key check');
  const signature = await webcrypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, key, probe);
  const publicKey = await certificate.publicKey.export(ES256, ['verify'], webcrypto as unknown as X509Crypto);
  if (!(await webcrypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, publicKey, signature, probe))) {
    throw new RedlineError('c2pa_key_mismatch', `The C2PA signing key does not belong to the certificate in ${source}.`, 'Configure the key that was certified in that certificate.');
  }
  return key;
}

async function loadFromFiles(certPath: string, keyPath: string, origin: SigningIdentity['origin'], trustAnchorPath?: string): Promise<SigningIdentity> {
  for (const p of [certPath, keyPath]) {
    if (!existsSync(p)) throw new RedlineError('c2pa_identity_missing', `C2PA signing file not found: ${p}.`, 'Check the configured certificate and key paths.');
  }
  const certs = pemBlocks(readFileSync(certPath, 'utf8'), 'CERTIFICATE').map((der) => new x509.X509Certificate(der));
  if (certs.length === 0) throw new RedlineError('c2pa_bad_certificate', `No PEM certificate found in ${certPath}.`, 'Give a PEM chain, signing certificate first.');
  const keys = pemBlocks(readFileSync(keyPath, 'utf8'), 'PRIVATE KEY');
  if (keys.length !== 1) {
    throw new RedlineError('c2pa_bad_key', `Expected one PKCS#8 'PRIVATE KEY' block in ${keyPath}, found ${keys.length}.`, 'Convert the key with `openssl pkcs8 -topk8 -nocrypt`.');
  }
  const [leaf, ...chain] = certs as [x509.X509Certificate, ...x509.X509Certificate[]];
  const now = new Date();
  if (leaf.notAfter < now || leaf.notBefore > now) {
    throw new RedlineError('c2pa_certificate_expired', `The C2PA signing certificate in ${certPath} is valid only from ${leaf.notBefore.toISOString()} to ${leaf.notAfter.toISOString()}.`, 'Renew the certificate (for the local identity: delete the c2pa folder in the data directory).');
  }
  const key = await importMatchingKey(keys[0]!, leaf, certPath);
  const trustAnchors = trustAnchorPath && existsSync(trustAnchorPath)
    ? pemBlocks(readFileSync(trustAnchorPath, 'utf8'), 'CERTIFICATE').map((der) => new x509.X509Certificate(der))
    : [];
  return {
    signer: new Es256Signer(key, leaf, chain),
    certificate: leaf,
    chain,
    trustAnchors,
    origin,
    source: certPath,
  };
}

function serial(): string {
  // Positive 16-byte serial (top bit clear), as RFC 5280 asks.
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0]! &= 0x7f;
  return Buffer.from(bytes).toString('hex');
}

/** Creates the local CA and signing certificate; returns the PEM texts to store. */
export async function createLocalIdentityFiles(commonName = 'Redline local signer'): Promise<{ chainPem: string; keyPem: string; caPem: string }> {
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(Date.now() + 5 * 365 * 24 * 3600 * 1000);
  const caKeys = (await webcrypto.subtle.generateKey(ES256, false, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=Redline local CA, O=Redline (local installation)`,
    notBefore,
    notAfter,
    keys: caKeys,
    signingAlgorithm: ES256,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey),
    ],
  });
  const leafKeys = (await webcrypto.subtle.generateKey(ES256, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${commonName}, O=Redline (local installation)`,
    issuer: ca.subject,
    notBefore,
    notAfter,
    publicKey: leafKeys.publicKey,
    signingKey: caKeys.privateKey,
    signingAlgorithm: ES256,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([OID_DOCUMENT_SIGNING, OID_EMAIL_PROTECTION], false),
      await x509.SubjectKeyIdentifierExtension.create(leafKeys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(ca, false),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', leafKeys.privateKey);
  return { chainPem: leaf.toString('pem') + '\n', keyPem: toPem(pkcs8, 'PRIVATE KEY'), caPem: ca.toString('pem') + '\n' };
}

/**
 * The identity to sign with: the configured one (options, else $REDLINE_C2PA_CERT and
 * $REDLINE_C2PA_KEY), else the local one in the data directory, created on first use.
 */
export async function loadSigningIdentity(options: IdentityOptions = {}): Promise<SigningIdentity> {
  const certPath = options.certPath ?? process.env.REDLINE_C2PA_CERT;
  const keyPath = options.keyPath ?? process.env.REDLINE_C2PA_KEY;
  if (certPath || keyPath) {
    if (!certPath || !keyPath) {
      throw new RedlineError('c2pa_identity_incomplete', 'A C2PA signing identity needs both a certificate chain and a private key.', 'Set both REDLINE_C2PA_CERT and REDLINE_C2PA_KEY (or neither, for the local identity).');
    }
    return loadFromFiles(resolve(certPath), resolve(keyPath), 'configured');
  }
  const dir = join(options.dataDir ?? defaultDataDir(), 'c2pa');
  const chainPath = join(dir, 'signer.pem');
  const keyFile = join(dir, 'signer.key');
  const caPath = join(dir, 'ca.pem');
  if (!existsSync(chainPath) || !existsSync(keyFile)) {
    if (existsSync(dir)) {
      throw new RedlineError('c2pa_identity_incomplete', `${dir} exists but lacks signer.pem or signer.key.`, 'Restore the files, or remove the folder to create a new local identity.');
    }
    // Written in a private folder renamed into place, so two processes starting at once
    // cannot end up with halves of two identities: the second rename fails, and it loads
    // the first one's.
    const files = await createLocalIdentityFiles();
    const parent = dirname(dir);
    mkdirSync(parent, { recursive: true });
    const staging = mkdtempSync(join(parent, '.c2pa-'));
    writeFileSync(join(staging, 'signer.key'), files.keyPem, { mode: 0o600 });
    writeFileSync(join(staging, 'signer.pem'), files.chainPem);
    writeFileSync(join(staging, 'ca.pem'), files.caPem);
    let won = true;
    try {
      renameSync(staging, dir);
    } catch (e) {
      if (!existsSync(chainPath)) throw e;
      won = false;
      rmSync(staging, { recursive: true, force: true });
    }
    if (won) {
      (options.onCreate ?? ((m: string) => process.stderr.write(`${m}\n`)))(
        `redline: no C2PA signing key configured; created a local signing identity in ${dir} ` +
          `(self-signed CA, untrusted by other validators). Set REDLINE_C2PA_CERT and REDLINE_C2PA_KEY to sign as your organisation.`,
      );
    }
  }
  return loadFromFiles(chainPath, keyFile, 'local', caPath);
}

/** The CN (else the full subject) of a certificate, for reports. */
export function subjectName(cert: x509.X509Certificate): string {
  return cert.subjectName.getField('CN')[0] ?? cert.subject;
}
