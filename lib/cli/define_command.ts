import { parseArgs } from "node:util";
import { parseTransportUri } from "../../mod.ts";
import type { CliIo } from "./cli_io.ts";
import { asUsageError, UsageError } from "./usage_error.ts";

/** How one flag is parsed: an option of `node:util`'s `parseArgs`. */
export interface FlagSpec {
  /** Whether the flag takes a value (`"string"`) or not (`"boolean"`). */
  type: "string" | "boolean";
  /** A one-letter alias, e.g. `"c"` for `-c`. */
  short?: string;
  /** Whether the flag may be repeated, its values collected in an array. */
  multiple?: boolean;
}

/** The flags of a command, by long name (without `--`). */
export type FlagSpecs = Record<string, FlagSpec>;

/** The parsed value of a flag declared as `S`. */
export type FlagValue<S extends FlagSpec> = S extends { type: "boolean" }
  ? S extends { multiple: true } ? boolean[] : boolean
  : S extends { multiple: true } ? string[]
  : string;

/** The parsed flags: each one that was given, with its value. */
export type FlagValues<F extends FlagSpecs> = {
  [K in keyof F]?: FlagValue<F[K]>;
};

/** One positional argument of a command. */
export interface PositionalSpec {
  /** Its name in the usage text, e.g. `"FILE"`. */
  name: string;
  /**
   * Whether it is a migration URI: a malformed one, or one of a transport
   * livemig does not support, is then a usage error.
   *
   * @default {false}
   */
  uri?: boolean;
}

/** What a command's `run` gets: the checked command line. */
export interface CommandArgs<
  F extends FlagSpecs,
  P extends readonly PositionalSpec[],
> {
  /** The flags that were given. */
  flags: FlagValues<F>;
  /** The positional arguments, exactly as many as declared. */
  positionals: { -readonly [I in keyof P]: string };
}

/** The declaration of a command, for {@linkcode defineCommand}. */
export interface CommandSpec<
  F extends FlagSpecs,
  P extends readonly PositionalSpec[],
> {
  /** The text `--help` prints, and usage errors print after the message. */
  usage: string;
  /** The flags, besides `-h, --help`, which every command has. */
  flags: F;
  /** The positional arguments, in order: the command takes exactly these. */
  positionals: P;
  /**
   * The usage error for a command line with `count` positional arguments
   * when the command takes another number.
   *
   * @param count How many were given.
   * @returns The message.
   */
  wrongCount(count: number): string;
  /**
   * Runs the command once its command line is checked.
   *
   * @param args The flags and positionals.
   * @param io Where to write.
   * @returns The exit code.
   * @throws {UsageError} For a bad flag value (exit status 2).
   */
  run(args: CommandArgs<F, P>, io: CliIo): Promise<number>;
}

/** A command of the command line, as {@linkcode defineCommand} makes it. */
export interface Command {
  /** The command's usage text. */
  readonly usage: string;
  /**
   * Runs the command with its arguments (those after the command name).
   *
   * @param args The arguments.
   * @param io Where to write.
   * @returns The exit code: 0 success, 1 failure; `--help` returns 0.
   * @throws {UsageError} For a bad command line (exit status 2).
   */
  run(args: string[], io: CliIo): Promise<number>;
}

/**
 * Makes a command from its declaration. Every command checks its command
 * line the same way before it runs: flags parsed strictly (an unknown one
 * is a usage error), `-h`/`--help` prints the usage, the number of
 * positionals must match, URI positionals must parse.
 *
 * @example Usage
 * ```ts
 * import { defineCommand } from "./define_command.ts";
 * import { UsageError } from "./usage_error.ts";
 * import assert from "node:assert/strict";
 *
 * const greet = defineCommand({
 *   usage: "Usage: greet NAME [--shout]\n",
 *   flags: { shout: { type: "boolean" } },
 *   positionals: [{ name: "NAME" }],
 *   wrongCount: (count) => `greet takes one NAME: received ${count}`,
 *   run({ flags, positionals: [name] }, io) {
 *     io.writeOut(flags.shout ? `HELLO ${name.toUpperCase()}\n` : `hello ${name}\n`);
 *     return Promise.resolve(0);
 *   },
 * });
 * let out = "";
 * const io = { writeOut: (text: string) => (out += text), writeErr: () => {}, errIsTerminal: false };
 * assert.equal(await greet.run(["ada", "--shout"], io), 0);
 * assert.equal(out, "HELLO ADA\n");
 * assert.equal(await greet.run(["--help"], io), 0);
 * await assert.rejects(greet.run([], io), new UsageError("greet takes one NAME: received 0", greet.usage));
 * await assert.rejects(greet.run(["ada", "--whisper"], io), UsageError);
 * ```
 *
 * @typeParam F The flags.
 * @typeParam P The positional arguments.
 * @param spec The usage text, flags, positionals and what to run.
 * @returns The command.
 */
export function defineCommand<
  const F extends FlagSpecs,
  const P extends readonly PositionalSpec[],
>(spec: CommandSpec<F, P>): Command {
  return {
    usage: spec.usage,
    async run(args: string[], io: CliIo): Promise<number> {
      const { values, positionals } = parseFlags(args, spec.flags, spec.usage);
      if (values.help) {
        io.writeOut(spec.usage);
        return 0;
      }
      if (positionals.length !== spec.positionals.length) {
        throw new UsageError(spec.wrongCount(positionals.length), spec.usage);
      }
      spec.positionals.forEach((positional, i) => {
        if (positional.uri) {
          asUsageError(spec.usage, () => parseTransportUri(positionals[i]!));
        }
      });
      return await spec.run({
        flags: values as FlagValues<F>,
        positionals: positionals as CommandArgs<F, P>["positionals"],
      }, io);
    },
  };
}

function parseFlags(args: string[], flags: FlagSpecs, usage: string) {
  try {
    return parseArgs({
      args,
      options: { ...flags, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    throw new UsageError(
      error instanceof Error ? error.message : String(error),
      usage,
    );
  }
}
