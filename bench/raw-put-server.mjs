// The floor of bench/uploads.ts: the least a server can do with a PUT, a bare node:http
// server piping the body to a file. Prints its port, then serves until killed.
import { createWriteStream } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { pipeline } from "node:stream/promises";

const dir = process.argv[2];
let n = 0;
const server = createServer((req, res) => {
  pipeline(req, createWriteStream(join(dir, `put-${++n}`))).then(
    () => res.writeHead(200).end(),
    () => res.destroy(),
  );
});
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`${server.address().port}\n`);
});
