// The loss log: one CSV row per optimizer step (step, loss, lr, epoch, seconds), kept
// consistent across resumes (rows after the resumed step are dropped), and a loss-curve
// PNG drawn from an SVG (raw loss and its moving average) with sharp.
import { appendFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import sharp from 'sharp';

export const LOSS_CSV_HEADER = 'step,loss,lr,epoch,elapsed_s';

export interface LossRow {
  step: number;
  loss: number;
  lr: number;
  epoch: number;
  elapsed: number;
}

export function readLossLog(path: string): LossRow[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8').split('\n').slice(1).filter(Boolean).map((l) => {
    const [step, loss, lr, epoch, elapsed] = l.split(',').map(Number);
    return { step: step!, loss: loss!, lr: lr!, epoch: epoch!, elapsed: elapsed! };
  });
}

export class LossLog {
  constructor(readonly path: string, resumeStep = 0) {
    const kept = readLossLog(path).filter((r) => r.step <= resumeStep);
    writeFileSync(path, [LOSS_CSV_HEADER, ...kept.map(rowText)].join('\n') + '\n');
  }

  append(row: LossRow): void {
    appendFileSync(this.path, `${rowText(row)}\n`);
  }
}

function rowText(r: LossRow): string {
  return `${r.step},${r.loss},${r.lr},${r.epoch},${r.elapsed.toFixed(3)}`;
}

/** Trailing moving average over a window of w rows. */
export function movingAverage(xs: readonly number[], w: number): number[] {
  const out: number[] = [];
  let sum = 0;
  for (let i = 0; i < xs.length; i++) {
    sum += xs[i]!;
    if (i >= w) sum -= xs[i - w]!;
    out.push(sum / Math.min(i + 1, w));
  }
  return out;
}

function esc(s: string): string {
  return s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);
}

/** The loss-curve chart as SVG text. */
export function lossCurveSvg(rows: readonly LossRow[], title: string, width = 800, height = 400): string {
  const m = { l: 60, r: 20, t: 30, b: 40 };
  const pw = width - m.l - m.r;
  const ph = height - m.t - m.b;
  const steps = rows.map((r) => r.step);
  const losses = rows.map((r) => r.loss);
  const smooth = movingAverage(losses, Math.max(1, Math.round(rows.length / 25)));
  const x0 = Math.min(...steps, 0);
  const x1 = Math.max(...steps, 1);
  const y0 = 0;
  const y1 = Math.max(...losses, 1e-6) * 1.05;
  const X = (s: number): number => m.l + ((s - x0) / (x1 - x0 || 1)) * pw;
  const Y = (v: number): number => m.t + ph - ((v - y0) / (y1 - y0)) * ph;
  const line = (ys: number[]): string => ys.map((v, i) => `${i ? 'L' : 'M'}${X(steps[i]!).toFixed(1)},${Y(v).toFixed(1)}`).join(' ');
  const ticks = Array.from({ length: 5 }, (_, i) => y0 + ((y1 - y0) * i) / 4);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="${width / 2}" y="18" text-anchor="middle" font-size="14">${esc(title)}</text>
${ticks.map((t) => `<line x1="${m.l}" x2="${m.l + pw}" y1="${Y(t)}" y2="${Y(t)}" stroke="#ddd"/><text x="${m.l - 6}" y="${Y(t) + 4}" text-anchor="end">${t.toPrecision(3)}</text>`).join('\n')}
<line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${m.t + ph}" stroke="black"/>
<line x1="${m.l}" x2="${m.l + pw}" y1="${m.t + ph}" y2="${m.t + ph}" stroke="black"/>
<text x="${m.l}" y="${height - 12}">step ${x0}</text><text x="${m.l + pw}" y="${height - 12}" text-anchor="end">${x1}</text>
${rows.length ? `<path d="${line(losses)}" fill="none" stroke="#9ab" stroke-width="1"/>\n<path d="${line(smooth)}" fill="none" stroke="#c22" stroke-width="2"/>` : ''}
</svg>`;
}

export async function writeLossCurve(pngPath: string, rows: readonly LossRow[], title: string): Promise<void> {
  await sharp(Buffer.from(lossCurveSvg(rows, title))).png().toFile(pngPath);
}
