/**
 * Uploads on the embedded server (issue 12): the server's memory while a large file is PUT
 * to it (it streams the body to disk, so its peak should stay near its idle size), and the
 * upload's throughput against a floor measured in the same run: a bare node:http server
 * piping the same bytes from the same client to a file.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createReadStream } from "node:fs";
import { mkdtemp, open, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { TestServer } from "../test/helpers/server.ts";
import type { BenchContext, BenchSection } from "./section.ts";

/** Resident and peak resident memory of a process, in bytes (Linux /proc). */
async function memoryOf(pid: number): Promise<{ rss: number; hwm: number }> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
  return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
}

/** Samples a process's RSS every `ms` until stopped; the highest sample. */
function sampleRss(pid: number, ms = 20): { stop(): Promise<number> } {
  let peak = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      peak = Math.max(peak, (await memoryOf(pid).catch(() => ({ rss: 0 }))).rss);
      await new Promise((r) => setTimeout(r, ms));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return peak;
    },
  };
}

/** A file of `size` bytes (1 MiB of random bytes, repeated), written once for both runs. */
async function makeFile(path: string, size: number): Promise<void> {
  const block = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < block.length; i++) block[i] = (i * 2654435761) >>> 24;
  const handle = await open(path, "w");
  try {
    for (let written = 0; written < size; written += block.length) {
      await handle.write(block, 0, Math.min(block.length, size - written));
    }
  } finally {
    await handle.close();
  }
}

/** PUTs the file to `url` streamed from disk; seconds taken. */
async function putFile(url: string, file: string, size: number, headers = {}): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(url, {
    method: "PUT",
    headers: { ...headers, "content-length": String(size) },
    body: Readable.toWeb(createReadStream(file, { highWaterMark: 1024 * 1024 })) as ReadableStream,
    duplex: "half",
  } as RequestInit);
  await res.arrayBuffer();
  if (!res.ok) throw new Error(`PUT ${url} answered ${res.status}`);
  return (performance.now() - t0) / 1000;
}

const MiB = 1024 * 1024;
const mib = (b: number) => `${(b / MiB).toFixed(0)} MiB`;
const rate = (bytes: number, s: number) => `${(bytes / MiB / s).toFixed(0)} MiB/s`;

async function run(ctx: BenchContext) {
  const size = ctx.quick ? 64 * MiB : 1024 * MiB;
  const dir = await mkdtemp(join(tmpdir(), "longrun-bench-uploads-"));
  const file = join(dir, "payload.bin");
  let floorServer: ChildProcess | undefined;
  const server = new TestServer({
    queues: { noop: { command: [process.execPath, "-e", "0"] } },
    tokens: "t:bench",
  });
  try {
    ctx.log(`uploads: writing a ${mib(size)} file`);
    await makeFile(file, size);

    // Floor: the same client, the same bytes, a server that only writes them to a file.
    floorServer = spawn(process.execPath, [join(import.meta.dirname, "raw-put-server.mjs"), dir], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    const port = await new Promise<string>((resolve) =>
      floorServer?.stdout?.once("data", (c: Buffer) => resolve(c.toString().trim())),
    );
    const floorPid = floorServer.pid as number;
    const floorIdle = await memoryOf(floorPid);
    const floorSampler = sampleRss(floorPid);
    ctx.log("uploads: floor PUT");
    const floorSeconds = await putFile(`http://127.0.0.1:${port}/x`, file, size);
    const floorPeak = Math.max(await floorSampler.stop(), floorIdle.rss);

    await server.start();
    const pid = server.pid as number;
    // Warm the route and the database once, so "idle" is the server as it serves.
    const warm = await server.fetch("/v1/uploads", {
      token: "t",
      body: { filename: "w", size: 1 },
    });
    await putFile(warm.body.url, file, 1).catch(() => 0);
    await new Promise((r) => setTimeout(r, 500));
    const idle = await memoryOf(pid);
    const created = await server.fetch("/v1/uploads", {
      token: "t",
      body: { filename: "payload.bin", size },
    });
    const sampler = sampleRss(pid);
    ctx.log(`uploads: ${mib(size)} PUT to the embedded server`);
    const seconds = await putFile(created.body.url, file, size, created.body.headers);
    const peak = Math.max(await sampler.stop(), idle.rss);
    const after = await memoryOf(pid);
    const status = await server.fetch(`/v1/uploads/${created.body.id}`, { token: "t" });
    const storedSize = (await stat(join(server.dataDir, "uploads", created.body.id))).size;
    if (status.body.status !== "READY" || storedSize !== size) {
      throw new Error(`the upload is ${status.body.status} with ${storedSize} bytes stored`);
    }

    const json = {
      bytes: size,
      server: {
        seconds,
        mibPerSecond: size / MiB / seconds,
        idleRssBytes: idle.rss,
        peakRssDuringUploadBytes: peak,
        vmHwmAfterBytes: after.hwm,
      },
      floor: {
        seconds: floorSeconds,
        mibPerSecond: size / MiB / floorSeconds,
        idleRssBytes: floorIdle.rss,
        peakRssBytes: floorPeak,
      },
    };
    const markdown = [
      "## Uploads: a large PUT to the embedded server",
      "",
      `One ${mib(size)} file PUT from a streamed fetch to the server's signed upload URL, and the`,
      "same bytes from the same client to a bare node:http server piping them to a file (the",
      "floor). RSS sampled every 20 ms from /proc while the bytes flowed.",
      "",
      "| | throughput | idle RSS | peak RSS during the PUT | growth |",
      "|---|---:|---:|---:|---:|",
      `| longrun embedded server | ${rate(size, seconds)} | ${mib(idle.rss)} | ${mib(peak)} | ${mib(peak - idle.rss)} |`,
      `| floor: bare node:http to a file | ${rate(size, floorSeconds)} | ${mib(floorIdle.rss)} | ${mib(floorPeak)} | ${mib(floorPeak - floorIdle.rss)} |`,
    ].join("\n");
    return {
      markdown,
      json,
      summary: [
        {
          measure: `upload throughput (${mib(size)} PUT, embedded)`,
          value: rate(size, seconds),
          floor: rate(size, floorSeconds),
          ratio: (floorSeconds / seconds).toFixed(2),
        },
        {
          measure: `server peak RSS during a ${mib(size)} upload`,
          value: mib(peak),
          floor: `${mib(idle.rss)} idle`,
          ratio: (peak / idle.rss).toFixed(2),
        },
      ],
    };
  } finally {
    floorServer?.kill("SIGKILL");
    await server.dispose();
    await rm(dir, { recursive: true, force: true });
  }
}

export const uploadsSection: BenchSection = {
  key: "uploads",
  title: "Uploads: server memory and throughput of a large PUT",
  run,
};
