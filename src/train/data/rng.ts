// The trainer's random numbers: xoshiro128** streams with a state that can be saved in a
// checkpoint and restored, so a resumed run draws exactly what an uninterrupted one draws.
// Each purpose (batch order, caption edits, noise, timesteps) has its own stream derived
// from the run seed, so changing one (e.g. turning on caption dropout) leaves the others
// unchanged.

/** splitmix32: spreads a seed over the 128-bit xoshiro state (never all zero). */
function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h >>> 0;
}

export interface RngState {
  s: [number, number, number, number];
  /** Box-Muller makes normals in pairs; the unused one is part of the state. */
  spare: number | null;
}

export class TrainRng {
  private s: Uint32Array;
  private spare: number | null = null;

  constructor(seed: number, stream = '') {
    const mix = splitmix32((seed >>> 0) ^ hashString(stream));
    this.s = Uint32Array.of(mix(), mix(), mix(), mix());
    if (!(this.s[0]! | this.s[1]! | this.s[2]! | this.s[3]!)) this.s[0] = 1;
  }

  static fromState(state: RngState): TrainRng {
    const r = new TrainRng(0);
    r.restore(state);
    return r;
  }

  state(): RngState {
    return { s: [this.s[0]!, this.s[1]!, this.s[2]!, this.s[3]!], spare: this.spare };
  }

  restore(state: RngState): void {
    this.s = Uint32Array.from(state.s);
    this.spare = state.spare;
  }

  /** Next 32-bit unsigned integer (xoshiro128**). */
  nextU32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = s[1]! << 9;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Uniform in [0, 1) with 32 bits of resolution. */
  next(): number {
    return this.nextU32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    if (this.spare !== null) {
      const v = this.spare;
      this.spare = null;
      return v;
    }
    let u = 0;
    while (u === 0) u = this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  fillNormal(out: Float32Array): Float32Array {
    for (let i = 0; i < out.length; i++) out[i] = this.normal();
    return out;
  }

  /** Fisher-Yates shuffle in place (Python's random.shuffle order of swaps). */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [items[i], items[j]] = [items[j]!, items[i]!];
    }
    return items;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** The named streams of one run. */
export const RNG_STREAMS = ['order', 'caption', 'noise', 'timestep'] as const;
export type RngStreamName = (typeof RNG_STREAMS)[number];

export class RunRngs {
  readonly streams: Record<RngStreamName, TrainRng>;

  constructor(seed: number) {
    this.streams = Object.fromEntries(RNG_STREAMS.map((n) => [n, new TrainRng(seed, n)])) as Record<RngStreamName, TrainRng>;
  }

  get order(): TrainRng { return this.streams.order; }
  get caption(): TrainRng { return this.streams.caption; }
  get noise(): TrainRng { return this.streams.noise; }
  get timestep(): TrainRng { return this.streams.timestep; }

  state(): Record<RngStreamName, RngState> {
    return Object.fromEntries(RNG_STREAMS.map((n) => [n, this.streams[n].state()])) as Record<RngStreamName, RngState>;
  }

  restore(state: Record<RngStreamName, RngState>): void {
    for (const n of RNG_STREAMS) this.streams[n].restore(state[n]);
  }
}
