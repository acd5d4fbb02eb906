// A1111 prompt editing [from:to:when], [to:when] and alternation [a|b]
// (modules/prompt_parser.py get_learned_conditioning_prompt_schedules), for a first pass and
// for a hires-fix second pass.
// A1111 parses with a lark grammar; this is a recursive-descent reading of that grammar:
//   start:     (prompt | /[][():]/+)*        brackets and colons may stand alone only here
//   prompt:    (emphasized | scheduled | alternate | plain | WHITESPACE)*
//   emphasized: "(" prompt ")" | "(" prompt ":" prompt ")" | "[" prompt "]"
//   scheduled: "[" [prompt ":"] prompt ":" [WS] NUMBER [WS] "]"
//   alternate: "[" prompt ("|" [prompt])+ "]"
//   plain:     ([^\\[\]():|] | \\.)+
// A prompt the grammar cannot derive (a '|' outside [..|..], a trailing backslash) is used
// unchanged at every step, as A1111 does when lark raises.

type Node =
  | { kind: 'text'; text: string }
  | { kind: 'group'; open: string; parts: Node[][]; separators: string[]; close: string }
  | { kind: 'scheduled'; before: Node[] | null; after: Node[]; whenText: string; when: number }
  | { kind: 'alternate'; options: Node[][] };

class Failure extends Error {}

// lark's common.SIGNED_NUMBER.
const NUMBER = /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?/;
const WS = /^[\t-\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/u;

class ScheduleParser {
  pos = 0;
  constructor(readonly text: string) {}

  /** start: prompt pieces, with stray brackets and colons taken literally. */
  parseStart(): Node[] {
    const nodes: Node[] = [];
    while (this.pos < this.text.length) {
      nodes.push(...this.parsePrompt());
      if (this.pos >= this.text.length) break;
      const ch = this.text[this.pos]!;
      if (ch === '|') throw new Failure();
      // '(' or '[' that opened nothing, or a stray ')' ']' ':'.
      nodes.push({ kind: 'text', text: ch });
      this.pos++;
    }
    return nodes;
  }

  /** prompt: stops before anything it cannot hold; a nested construct that fails ends it. */
  parsePrompt(): Node[] {
    const nodes: Node[] = [];
    let plain = '';
    const flush = () => {
      if (plain) nodes.push({ kind: 'text', text: plain });
      plain = '';
    };
    while (this.pos < this.text.length) {
      const ch = this.text[this.pos]!;
      if (ch === '\\') {
        const next = this.text[this.pos + 1];
        if (next === undefined || next === '\n') throw new Failure();
        plain += ch + next;
        this.pos += 2;
      } else if (ch === '(' || ch === '[') {
        const start = this.pos;
        const node = this.tryConstruct();
        if (node === undefined) {
          this.pos = start;
          break;
        }
        flush();
        nodes.push(node);
      } else if (ch === ')' || ch === ']' || ch === ':' || ch === '|') {
        break;
      } else {
        plain += ch;
        this.pos++;
      }
    }
    flush();
    return nodes;
  }

  private tryConstruct(): Node | undefined {
    const start = this.pos;
    try {
      return this.text[start] === '(' ? this.parseRound() : this.parseSquare();
    } catch (e) {
      if (!(e instanceof Failure)) throw e;
      this.pos = start;
      return undefined;
    }
  }

  private expect(ch: string): void {
    if (this.text[this.pos] !== ch) throw new Failure();
    this.pos++;
  }

  private parseRound(): Node {
    this.expect('(');
    const first = this.parsePrompt();
    if (this.text[this.pos] === ')') {
      this.pos++;
      return { kind: 'group', open: '(', parts: [first], separators: [], close: ')' };
    }
    this.expect(':');
    const second = this.parsePrompt();
    this.expect(')');
    return { kind: 'group', open: '(', parts: [first, second], separators: [':'], close: ')' };
  }

  /** Reads ':' [WS] NUMBER [WS] ']' if it is there. */
  private tryWhen(): { whenText: string; after: number } | undefined {
    let p = this.pos;
    if (this.text[p] !== ':') return undefined;
    p++;
    p += WS.exec(this.text.slice(p))?.[0].length ?? 0;
    const num = NUMBER.exec(this.text.slice(p));
    if (!num) return undefined;
    p += num[0].length;
    p += WS.exec(this.text.slice(p))?.[0].length ?? 0;
    if (this.text[p] !== ']') return undefined;
    return { whenText: num[0], after: p + 1 };
  }

  private parseSquare(): Node {
    this.expect('[');
    const first = this.parsePrompt();
    const ch = this.text[this.pos];
    if (ch === ']') {
      this.pos++;
      return { kind: 'group', open: '[', parts: [first], separators: [], close: ']' };
    }
    if (ch === '|') {
      const options = [first];
      while (this.text[this.pos] === '|') {
        this.pos++;
        options.push(this.parsePrompt());
      }
      this.expect(']');
      return { kind: 'alternate', options };
    }
    if (ch === ':') {
      const short = this.tryWhen();
      if (short) {
        this.pos = short.after;
        return { kind: 'scheduled', before: null, after: first, whenText: short.whenText, when: 0 };
      }
      this.pos++;
      const second = this.parsePrompt();
      const long = this.tryWhen();
      if (!long) throw new Failure();
      this.pos = long.after;
      return { kind: 'scheduled', before: first, after: second, whenText: long.whenText, when: 0 };
    }
    throw new Failure();
  }
}

function visit(nodes: Node[], fn: (n: Node) => void): void {
  for (const n of nodes) {
    fn(n);
    if (n.kind === 'group') n.parts.forEach((p) => visit(p, fn));
    else if (n.kind === 'scheduled') {
      if (n.before) visit(n.before, fn);
      visit(n.after, fn);
    } else if (n.kind === 'alternate') n.options.forEach((o) => visit(o, fn));
  }
}

function render(nodes: Node[], step: number): string {
  let out = '';
  for (const n of nodes) {
    switch (n.kind) {
      case 'text':
        out += n.text;
        break;
      case 'group':
        out += n.open;
        n.parts.forEach((p, i) => {
          if (i > 0) out += n.separators[i - 1];
          out += render(p, step);
        });
        out += n.close;
        break;
      case 'scheduled':
        out += step <= n.when ? (n.before ? render(n.before, step) : '') : render(n.after, step);
        break;
      case 'alternate':
        out += render(n.options[(step - 1) % n.options.length]!, step);
        break;
    }
  }
  return out;
}

/** A prompt text and the last sampling step (1-based, A1111's numbering) it is used for. */
export interface ScheduledPrompt {
  endAtStep: number;
  prompt: string;
}

/**
 * A1111's prompt schedule for `steps` sampling steps: [a:b:N] uses a up to step N then b;
 * N with a '.' is a fraction of the steps, int(N*steps); [b:N] adds b after step N, [a::N]
 * removes a after it; [a|b] alternates every step. A prompt without these gives one entry.
 *
 * With `firstPassSteps`, `steps` are a hires fix's second pass and the timeline goes on from
 * the first pass (A1111's hires_steps): an integer N counts from the first pass's end
 * (N - firstPassSteps), a fraction N is (N - 1) * steps, so [a:b:1.5] switches halfway
 * through the second pass and [a:b:0.5] has already switched when it starts.
 */
export function promptSchedule(prompt: string, steps: number, firstPassSteps?: number): ScheduledPrompt[] {
  let tree: Node[];
  try {
    tree = new ScheduleParser(prompt).parseStart();
  } catch (e) {
    if (e instanceof Failure) return [{ endAtStep: steps, prompt }];
    throw e;
  }
  const ends = new Set<number>([steps]);
  visit(tree, (n) => {
    if (n.kind === 'scheduled') {
      let v = Number(n.whenText);
      const hires = firstPassSteps !== undefined;
      if (n.whenText.includes('.')) v = (v - (hires ? 1 : 0)) * steps;
      else if (hires) v -= firstPassSteps;
      n.when = Math.min(steps, Math.trunc(v));
      if (n.when >= 1) ends.add(n.when);
    } else if (n.kind === 'alternate') {
      for (let s = 1; s <= steps; s++) ends.add(s);
    }
  });
  return [...ends].sort((a, b) => a - b).map((t) => ({ endAtStep: t, prompt: render(tree, t) }));
}

/**
 * Which entry of a schedule the sampler uses at `step`, counted from 0 as A1111's
 * denoiser counts its calls: the first whose endAtStep >= step.
 */
export function scheduleIndexAt(schedule: readonly ScheduledPrompt[], step: number): number {
  const i = schedule.findIndex((s) => step <= s.endAtStep);
  return i === -1 ? 0 : i;
}
