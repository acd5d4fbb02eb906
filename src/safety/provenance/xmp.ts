// The XMP packet that tells IPTC-aware readers (Google Images, Adobe, news wires) that the
// image was produced by a trained model. PNG carries XMP in an iTXt chunk with the
// keyword `XML:com.adobe.xmp` (XMP spec part 3, 1.1.5).

export const XMP_KEYWORD = 'XML:com.adobe.xmp';
export const IPTC_EXT_NS = 'http://iptc.org/std/Iptc4xmpExt/2008-02-29/';
export const TRAINED_ALGORITHMIC_MEDIA = 'http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia';

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export interface XmpFields {
  digitalSourceType: string;
  /** xmp:CreatorTool, e.g. 'Redline 0.1.0'. */
  creatorTool: string;
}

export function buildXmpPacket({ digitalSourceType, creatorTool }: XmpFields): string {
  return [
    '<?xpacket begin="\uFEFF" id="W5M0MpCehiHzreSzNTczkc9d"?>',
    '<x:xmpmeta xmlns:x="adobe:ns:meta/">',
    ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">',
    '  <rdf:Description rdf:about=""',
    `    xmlns:Iptc4xmpExt="${IPTC_EXT_NS}"`,
    '    xmlns:xmp="http://ns.adobe.com/xap/1.0/"',
    `    Iptc4xmpExt:DigitalSourceType="${escapeXml(digitalSourceType)}"`,
    `    xmp:CreatorTool="${escapeXml(creatorTool)}"/>`,
    ' </rdf:RDF>',
    '</x:xmpmeta>',
    '<?xpacket end="r"?>',
  ].join('\n');
}

/**
 * Iptc4xmpExt:DigitalSourceType from an XMP packet, in any of the three RDF spellings
 * writers use (attribute, element text, rdf:resource). Finds the prefix bound to the
 * IPTC Extension namespace rather than assuming `Iptc4xmpExt`.
 */
export function readDigitalSourceType(xmp: string): string | undefined {
  const prefixes = [...xmp.matchAll(/xmlns:([A-Za-z_][\w.-]*)\s*=\s*["']([^"']*)["']/g)]
    .filter((m) => m[2] === IPTC_EXT_NS)
    .map((m) => m[1]!);
  for (const p of prefixes) {
    const name = `${p}:DigitalSourceType`;
    const attr = new RegExp(`${name}\\s*=\\s*["']([^"']*)["']`).exec(xmp);
    if (attr) return attr[1]!.trim();
    const resource = new RegExp(`<${name}\\s+rdf:resource\\s*=\\s*["']([^"']*)["']`).exec(xmp);
    if (resource) return resource[1]!.trim();
    const element = new RegExp(`<${name}>([^<]*)</${name}>`).exec(xmp);
    if (element) return element[1]!.trim();
  }
  return undefined;
}
