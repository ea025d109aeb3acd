#!/usr/bin/env node
/**
 * The chaos queue's job: the demo job (jobs/examples/demo/job.mjs, same input and
 * behaviour) made to outlive its server. A SIGKILLed server takes the reading ends of its
 * jobs' stdout and stderr pipes with it, and the demo job would then die of EPIPE at its
 * next log line, so a restarted server would never meet a job left running. Real jobs
 * (logging to a file, or ignoring a broken pipe) keep running; so does this one, and the
 * restarted server must stop it before it runs the request again (SPEC §5).
 */
for (const stream of [process.stdout, process.stderr]) stream.on("error", () => {});
await import("../jobs/examples/demo/job.mjs");
