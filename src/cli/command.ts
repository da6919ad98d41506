/** The shape of a CLI command. */
import type { ParseArgsConfig } from 'node:util';
import type { Context } from './context.js';

type OptionsSpec = NonNullable<ParseArgsConfig['options']>;

/** One `vmvault` sub-command. */
export interface Command {
  name: string;
  /** One line for `vmvault help`. */
  summary: string;
  /** Usage line(s) after "vmvault ". */
  usage: string;
  /** Command-specific options (global ones are added by the dispatcher). */
  options: OptionsSpec;
  /** Whether the command takes arguments after a bare `--` (they arrive as `passthrough`). */
  passthrough?: boolean;
  /** Runs the command; returns the exit code. */
  run(
    ctx: Context,
    args: string[],
    values: Record<string, string | boolean | string[] | undefined>,
    passthrough?: string[],
  ): Promise<number>;
}
