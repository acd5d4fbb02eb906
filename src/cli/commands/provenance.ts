import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { X509Certificate } from '@peculiar/x509';
import { RedlineError } from '../../errors.ts';
import { checkProvenance, defaultDataDir, type ProvenanceReport } from '../../safety/provenance/index.ts';

export const summary = 'report the provenance marks of an image (parameters, XMP, C2PA, watermark)';

const HELP = `Usage: redline provenance check FILE [options]

Reports each provenance mark Redline writes: the A1111 parameters chunk, the XMP
digitalSourceType, the C2PA manifest (signature, hash binding, signer) and the invisible
watermark (dwtDct) with its payload.

Options:
  --json                 print the report as JSON
  --bits N               watermark length in bits when the manifest does not give it (default 48)
  --payload HEX          the expected watermark payload, to count bit errors against
  --trust PEM            trust this CA for the signer (default: the local identity's CA in the data dir)
  --data-dir DIR         Redline data directory (default $REDLINE_DATA_DIR or ~/.redline)
  -h, --help             show this help

Exit status: 0 when the C2PA manifest is valid and the watermark is present, 1 otherwise.`;

function loadAnchors(path: string): X509Certificate[] {
  const pem = readFileSync(path, 'utf8');
  return [...pem.matchAll(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g)].map((m) => new X509Certificate(m[0]));
}

function yesNo(v: boolean): string {
  return v ? 'yes' : 'no';
}

function render(file: string, r: ProvenanceReport): string {
  const lines = [`${file}: ${r.format} ${r.width}x${r.height}`];
  lines.push(`  parameters chunk:   ${r.parameters.present ? `present (${r.parameters.text!.length} chars)` : 'absent'}`);
  lines.push(`  XMP source type:    ${r.xmp.digitalSourceType ?? (r.xmp.present ? 'XMP present, no DigitalSourceType' : 'absent')}`);
  const c = r.c2pa;
  if (!c.present) lines.push('  C2PA manifest:      absent');
  else {
    lines.push(`  C2PA manifest:      present, ${c.valid ? 'valid' : 'INVALID'}${c.error ? ` (${c.error})` : ''}`);
    lines.push(`    signature valid:  ${yesNo(c.signatureValid)}`);
    lines.push(`    hash binding:     ${c.hashBindingValid ? 'matches the file' : 'BROKEN (file changed after signing)'}`);
    if (c.signer) lines.push(`    signer:           ${c.signer.commonName} (issuer ${c.signer.issuer}; ${c.trusted ? 'trusted' : 'not in trust list'})`);
    if (c.digitalSourceType) lines.push(`    created as:       ${c.digitalSourceType} by ${c.softwareAgent ?? '?'}`);
    if (c.generation) {
      lines.push(`    model:            ${c.generation.modelHash}`);
      for (const [name, hash] of Object.entries(c.generation.adapterHashes)) lines.push(`    adapter:          ${name} ${hash}`);
    }
    for (const f of c.failures) lines.push(`    failed:           ${f.code}${f.explanation ? ` (${f.explanation})` : ''}`);
  }
  const w = r.watermark;
  if (!w.checked) lines.push(`  watermark:          not checked: ${w.reason}`);
  else {
    lines.push(`  watermark:          ${w.present ? `present, payload ${w.payloadHex} (${w.bits} bits)` : 'not found'}; agreement ${w.agreement} (off-period ${w.offPeriodAgreement})` + (w.bitErrors !== undefined ? `; ${w.bitErrors} bit errors vs expected` : ''));
  }
  return lines.join('\n');
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      json: { type: 'boolean', default: false },
      bits: { type: 'string' },
      payload: { type: 'string' },
      trust: { type: 'string' },
      'data-dir': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const [action, file, ...extra] = positionals;
  if (action !== 'check' || !file || extra.length > 0) {
    throw new RedlineError('usage', 'Usage: redline provenance check FILE [--json].', 'Run `redline provenance --help` for the options.');
  }
  if (!existsSync(file)) throw new RedlineError('file_not_found', `No such file: ${file}.`);
  let watermarkBits: number | undefined;
  if (values.bits !== undefined) {
    watermarkBits = Number(values.bits);
    if (!Number.isInteger(watermarkBits) || watermarkBits < 1 || watermarkBits > 1024) {
      throw new RedlineError('bad_option', `--bits must be a whole number from 1 to 1024, got '${values.bits}'.`);
    }
  }
  let expectedPayload: Uint8Array | undefined;
  if (values.payload !== undefined) {
    if (!/^([0-9a-fA-F]{2})+$/.test(values.payload)) throw new RedlineError('bad_option', `--payload must be hex bytes, got '${values.payload}'.`, 'Example: --payload 5265646c696e');
    expectedPayload = new Uint8Array(Buffer.from(values.payload, 'hex'));
  }
  const trustPath = values.trust ?? join(values['data-dir'] ?? defaultDataDir(), 'c2pa', 'ca.pem');
  if (values.trust && !existsSync(values.trust)) throw new RedlineError('file_not_found', `No such trust anchor file: ${values.trust}.`);
  const trustAnchors = existsSync(trustPath) ? loadAnchors(trustPath) : [];
  const report = await checkProvenance(new Uint8Array(readFileSync(file)), {
    trustAnchors,
    ...(watermarkBits !== undefined ? { watermarkBits } : {}),
    ...(expectedPayload ? { expectedPayload } : {}),
  });
  console.log(values.json ? JSON.stringify(report, null, 2) : render(file, report));
  return report.c2pa.valid && report.watermark.present ? 0 : 1;
}
