/**
 * Runs `cli.ts` commands as child processes for tests: stderr read line by
 * line as it comes, stdout's last line parsed as the command's JSON.
 */

const CLI = new URL("../../cli.ts", import.meta.url).pathname;
const PERMISSIONS = [
  "--allow-read",
  "--allow-write",
  "--allow-net=127.0.0.1",
  "--allow-run",
];

/**
 * How long a CLI process may run (they take seconds) before it is killed,
 * so that a stuck one fails its test instead of hanging the run.
 */
const PROCESS_DEADLINE_MS = 120_000;

/** A running `cli.ts` command. */
export interface CliProcess {
  child: Deno.ChildProcess;
  stdout: Promise<string>;
  /** Every stderr line read so far. */
  stderr: string[];
  stderrLines: AsyncIterator<string>;
}

/**
 * Starts `cli.ts` with `args`.
 *
 * @param args The command and its arguments.
 * @returns The process.
 */
export function spawnCli(args: string[]): CliProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, CLI, ...args],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const watchdog = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // it has ended
    }
  }, PROCESS_DEADLINE_MS);
  child.status.finally(() => clearTimeout(watchdog));
  const stdout = new Response(child.stdout).text();
  const stderr: string[] = [];
  const lines = child.stderr.pipeThrough(new TextDecoderStream())
    .pipeThrough(splitLines())[Symbol.asyncIterator]();
  const stderrLines: AsyncIterator<string> = {
    async next() {
      const result = await lines.next();
      if (!result.done) stderr.push(result.value);
      return result;
    },
  };
  return { child, stdout, stderr, stderrLines };
}

function splitLines(): TransformStream<string, string> {
  let rest = "";
  return new TransformStream({
    transform(text, controller) {
      const parts = (rest + text).split("\n");
      rest = parts.pop()!;
      for (const line of parts) controller.enqueue(line);
    },
    flush(controller) {
      if (rest) controller.enqueue(rest);
    },
  });
}

/**
 * Reads stderr until a line matches `pattern`.
 *
 * @param process The process.
 * @param pattern What to wait for.
 * @returns The match.
 */
export async function waitForLine(
  process: CliProcess,
  pattern: RegExp,
): Promise<RegExpExecArray> {
  while (true) {
    const { done, value } = await process.stderrLines.next();
    if (done) {
      throw new Error(
        `the process ended before printing ${pattern}; stderr:\n${
          process.stderr.join("\n")
        }`,
      );
    }
    const match = pattern.exec(value);
    if (match) return match;
  }
}

/**
 * Waits for the process to end.
 *
 * @param process The process.
 * @returns Its exit code, the JSON of its last stdout line, all of stderr.
 */
export async function finishCli(
  process: CliProcess,
): Promise<{ code: number; json: Record<string, unknown>; stderr: string }> {
  const [status, stdout] = await Promise.all([
    process.child.status,
    process.stdout,
  ]);
  while (!(await process.stderrLines.next()).done) {
    // drain stderr so the process is fully reaped
  }
  const stderr = process.stderr.join("\n");
  const last = stdout.trimEnd().split("\n").at(-1) ?? "{}";
  try {
    return { code: status.code, json: JSON.parse(last), stderr };
  } catch {
    throw new Error(
      `exit ${status.code} without a JSON line\nstdout: ${stdout}\nstderr: ${stderr}`,
    );
  }
}
