// Symbolic dimensions. A dimension is a number or a string naming a monomial over symbols:
// 'batch', 'height/8', '2*batch', 'height*width/64'. Monomials are closed under the
// multiplications and exact divisions that shape inference needs (conv strides, reshapes,
// flattening H*W), so the UNet's skip connections and attention reshapes can be checked at
// build time while batch and spatial size stay free. A symbol is assumed divisible by what
// the graph divides it by (the model states e.g. "height multiple of 8").

export type Dim = number | string;

interface Monomial {
  num: number; // rational coefficient num/den, reduced, den > 0
  den: number;
  syms: Map<string, number>; // symbol -> power (>0)
}

const SYMBOL = /^[A-Za-z_][A-Za-z0-9_]*$/;

function gcd(a: number, b: number): number {
  a = Math.abs(a);
  b = Math.abs(b);
  while (b) [a, b] = [b, a % b];
  return a || 1;
}

function parse(d: Dim): Monomial {
  if (typeof d === 'number') return { num: d, den: 1, syms: new Map() };
  const [top, bottom, extra] = d.split('/');
  if (extra !== undefined) throw new Error(`bad symbolic dim '${d}'`);
  let den = 1;
  if (bottom !== undefined) {
    den = Number(bottom);
    if (!Number.isInteger(den) || den <= 0) throw new Error(`bad symbolic dim '${d}'`);
  }
  let num = 1;
  const syms = new Map<string, number>();
  for (const part of top!.split('*')) {
    if (/^\d+$/.test(part)) num *= Number(part);
    else if (SYMBOL.test(part)) syms.set(part, (syms.get(part) ?? 0) + 1);
    else throw new Error(`bad symbolic dim '${d}': '${part}' is neither a number nor a symbol`);
  }
  return norm({ num, den, syms });
}

function norm(m: Monomial): Monomial {
  const g = gcd(m.num, m.den);
  return { num: m.num / g, den: m.den / g, syms: m.syms };
}

function format(m: Monomial): Dim {
  if (m.syms.size === 0) {
    if (m.den !== 1) throw new Error(`dimension ${m.num}/${m.den} is not an integer`);
    return m.num;
  }
  const parts: string[] = [];
  if (m.num !== 1) parts.push(String(m.num));
  for (const s of [...m.syms.keys()].sort()) for (let i = 0; i < m.syms.get(s)!; i++) parts.push(s);
  return m.den === 1 ? parts.join('*') : `${parts.join('*')}/${m.den}`;
}

/** Canonical form, so that equal dims compare equal with ===. */
export function canonDim(d: Dim): Dim {
  if (typeof d === 'number') {
    if (!Number.isInteger(d) || d < 0) throw new Error(`bad dimension ${d}`);
    return d;
  }
  return format(parse(d));
}

export function isSymbolic(d: Dim): d is string {
  return typeof d === 'string';
}

export function mulDim(a: Dim, b: Dim): Dim {
  if (typeof a === 'number' && typeof b === 'number') return a * b;
  if (a === 0 || b === 0) return 0;
  const x = parse(a);
  const y = parse(b);
  const syms = new Map(x.syms);
  for (const [s, p] of y.syms) syms.set(s, (syms.get(s) ?? 0) + p);
  return format(norm({ num: x.num * y.num, den: x.den * y.den, syms }));
}

/** a / b; undefined when the quotient is not a monomial (a symbol's power would go negative)
 * or, for numbers, not an integer. */
export function divDim(a: Dim, b: Dim): Dim | undefined {
  if (typeof a === 'number' && typeof b === 'number') return b !== 0 && a % b === 0 ? a / b : undefined;
  const x = parse(a);
  const y = parse(b);
  if (y.num === 0) return undefined;
  const syms = new Map(x.syms);
  for (const [s, p] of y.syms) {
    const q = (syms.get(s) ?? 0) - p;
    if (q < 0) return undefined;
    if (q === 0) syms.delete(s);
    else syms.set(s, q);
  }
  const m = norm({ num: x.num * y.den, den: x.den * y.num, syms });
  if (m.syms.size === 0 && m.den !== 1) return undefined;
  return format(m);
}

export function addDim(a: Dim, b: Dim): Dim | undefined {
  if (typeof a === 'number' && typeof b === 'number') return a + b;
  const x = parse(a);
  const y = parse(b);
  if (format({ num: 1, den: 1, syms: x.syms }) !== format({ num: 1, den: 1, syms: y.syms })) return undefined;
  return format(norm({ num: x.num * y.den + y.num * x.den, den: x.den * y.den, syms: x.syms }));
}

export function productDims(dims: readonly Dim[]): Dim {
  return dims.reduce<Dim>((acc, d) => mulDim(acc, d), 1);
}

/** Symbols in a dim ('height*width/64' -> ['height', 'width']). */
export function dimSymbols(d: Dim): string[] {
  return typeof d === 'number' ? [] : [...parse(d).syms.keys()];
}

/** Value of a dim given values for its symbols. */
export function evalDim(d: Dim, env: Readonly<Record<string, number>>): number {
  if (typeof d === 'number') return d;
  const m = parse(d);
  let v = m.num;
  for (const [s, p] of m.syms) {
    const x = env[s];
    if (x === undefined) throw new Error(`no value for symbol '${s}'`);
    v *= x ** p;
  }
  return v / m.den;
}

export function formatShape(shape: readonly Dim[]): string {
  return `[${shape.join(', ')}]`;
}
