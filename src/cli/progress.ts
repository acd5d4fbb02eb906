// A terminal progress bar with rate and ETA on stderr. On a TTY it redraws one line; when
// stderr is a pipe or file it writes a plain line at most every few seconds, so logs stay
// readable.

export class ProgressBar {
  private readonly start = Date.now();
  private lastPlain = 0;
  private done = 0;

  constructor(
    private readonly label: string,
    private total: number,
    private readonly unit = 'it',
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {}

  setTotal(total: number): void {
    this.total = total;
  }

  update(done: number, extra = ''): void {
    this.done = done;
    const elapsed = (Date.now() - this.start) / 1000;
    const rate = elapsed > 0 ? done / elapsed : 0;
    const eta = rate > 0 ? (this.total - done) / rate : 0;
    const frac = this.total > 0 ? Math.min(1, done / this.total) : 0;
    const stats = `${done}/${this.total} ${rate >= 1 || rate === 0 ? `${rate.toFixed(2)} ${this.unit}/s` : `${(1 / rate).toFixed(2)} s/${this.unit}`} ETA ${formatSeconds(eta)}${extra ? ` ${extra}` : ''}`;
    if (this.stream.isTTY) {
      const width = Math.max(10, Math.min(40, (this.stream.columns ?? 80) - this.label.length - stats.length - 6));
      const filled = Math.round(frac * width);
      this.stream.write(`\r${this.label} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${stats}\x1b[K`);
    } else if (Date.now() - this.lastPlain > 5000 || done === this.total) {
      this.lastPlain = Date.now();
      this.stream.write(`${this.label} ${stats}\n`);
    }
  }

  finish(message?: string): void {
    if (this.stream.isTTY) this.stream.write('\n');
    if (message) this.stream.write(`${message}\n`);
    void this.done;
  }
}

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  return `${m}m${String(Math.round(s - m * 60)).padStart(2, '0')}s`;
}
