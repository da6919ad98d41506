/** Terminal progress: one line on stderr, redrawn a few times a second, only on a TTY. */
import { formatBytes, formatDuration } from '../core/units.js';

/** A progress line for one long operation. */
export class ProgressLine {
  private readonly started = Date.now();
  private last = 0;
  private drawn = false;

  constructor(
    private readonly label: string,
    private readonly enabled: boolean,
  ) {}

  /** Updates the line with `done` of `total` bytes (throttled to 5 Hz). */
  update(done: number, total: number, extra = ''): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (now - this.last < 200 && done < total) return;
    this.last = now;
    const secs = (now - this.started) / 1000;
    const rate = secs > 0 ? done / secs : 0;
    const eta = rate > 0 ? (total - done) / rate : Number.POSITIVE_INFINITY;
    const pct = total > 0 ? ((100 * done) / total).toFixed(1) : '100.0';
    const line = `${this.label}: ${pct}% ${formatBytes(done)} / ${formatBytes(total)}  ${formatBytes(rate)}/s  ETA ${formatDuration(eta)}${extra ? `  ${extra}` : ''}`;
    process.stderr.write(`\r\x1b[2K${line}`);
    this.drawn = true;
  }

  /** Clears the line. */
  done(): void {
    if (this.drawn) process.stderr.write('\r\x1b[2K');
    this.drawn = false;
  }
}
