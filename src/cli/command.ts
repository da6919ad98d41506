/**
 * The shape of a CLI command. A command is split in two: its {@link CommandSpec} (name, help
 * text, options) lives in the light command table `commands/specs.ts`, which `vmvault help`
 * and the argument parser read without loading any implementation; its {@link CommandRun} lives
 * in the command's own module, imported only when that command runs.
 */
import type { ParseArgsConfig } from 'node:util';
import type { Context } from './context.js';

/** Options of one command, in `node:util` `parseArgs` form. */
export type OptionsSpec = NonNullable<ParseArgsConfig['options']>;

/** Parsed option values handed to a command. */
export type OptionValues = Record<string, string | boolean | string[] | undefined>;

/** The implementation of a command: runs it and resolves to the exit code. */
export type CommandRun = (
  ctx: Context,
  args: string[],
  values: OptionValues,
  passthrough?: string[],
) => Promise<number>;

/** What the dispatcher and the help know about a command without loading it. */
export interface CommandSpec {
  name: string;
  /** One line for `vmvault help`. */
  summary: string;
  /** Usage line(s) after "vmvault ". */
  usage: string;
  /** Command-specific options (global ones are added by the dispatcher). */
  options: OptionsSpec;
  /** Whether the command takes arguments after a bare `--` (they arrive as `passthrough`). */
  passthrough?: boolean;
  /** Imports the command's module and returns its implementation. */
  load(): Promise<CommandRun>;
}
