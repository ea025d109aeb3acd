/**
 * Entry of the `longrun` command line (bin/longrun.mjs loads it through tsx). Runs one
 * command with the process's streams and environment and exits with its status.
 */
import { runCli } from "./run.ts";

// `longrun logs … | head`: a closed pipe ends the output, it is not an error.
process.stdout.on("error", (err: NodeJS.ErrnoException) => {
  if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
  throw err;
});

const status = await runCli(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  stdin: process.stdin,
  env: process.env,
  onInterrupt(handler) {
    process.on("SIGINT", handler);
    return () => process.off("SIGINT", handler);
  },
});
process.exitCode = status;
