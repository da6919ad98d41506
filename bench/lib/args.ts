/** Command-line options shared by the benchmark scripts. */
import { parseArgs } from 'node:util';
import { parseSize } from './units.js';

/** Parsed benchmark options. */
export interface BenchOptions {
  size: number;
  sizeText: string;
  workdir: string;
  keep: boolean;
  repeat: number;
  seed: number;
  source: string;
  /** `--chunk-sizes 16K,32K,...` (chunk-size study only). */
  chunkSizes: string[];
}

/**
 * Parses `--size 4G --workdir DIR --keep --repeat N --seed S --source DIR --chunk-sizes LIST`.
 * @throws Error on unknown options or bad values.
 */
export function parseBenchArgs(argv: readonly string[], defaults: { size: string }): BenchOptions {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      size: { type: 'string', default: defaults.size },
      workdir: { type: 'string', default: '/var/tmp' },
      keep: { type: 'boolean', default: false },
      repeat: { type: 'string', default: '1' },
      seed: { type: 'string', default: '20240601' },
      source: { type: 'string', default: '/usr/lib/x86_64-linux-gnu' },
      'chunk-sizes': { type: 'string', default: '16K,32K,64K,128K,256K' },
    },
    strict: true,
  });
  const repeat = Number(values.repeat);
  if (!Number.isInteger(repeat) || repeat < 1)
    throw new Error(`--repeat takes a positive integer, not ${values.repeat}`);
  return {
    size: parseSize(values.size),
    sizeText: values.size,
    workdir: values.workdir,
    keep: values.keep,
    repeat,
    seed: Number(values.seed) >>> 0,
    source: values.source,
    chunkSizes: values['chunk-sizes'].split(',').filter((x) => x !== ''),
  };
}

/** The value after `--name` in `process.argv`, else `def`. */
export function textArg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? (process.argv[i + 1] ?? def) : def;
}

/**
 * The number after `--name` in `process.argv`, else `def`.
 * @throws Error when the value is not a number.
 */
export function numberArg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return def;
  const n = Number(process.argv[i + 1]);
  if (!Number.isFinite(n)) throw new Error(`--${name} takes a number, not ${process.argv[i + 1]}`);
  return n;
}
