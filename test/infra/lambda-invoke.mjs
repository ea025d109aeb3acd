// Runs one invocation of a bundled Lambda handler the way the Node.js runtime does: a plain
// Node process (no tsx, no repository on the module path), the function's code folder as
// its task root, the environment its parent gives it and nothing else.
//
//   node lambda-invoke.mjs <asset dir> <handler, e.g. index.handler> <event file> <result file>
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [assetDir, handlerSpec, eventFile, resultFile] = process.argv.slice(2);
const dot = handlerSpec.lastIndexOf(".");
const moduleName = handlerSpec.slice(0, dot);
const exportName = handlerSpec.slice(dot + 1);
// The runtime resolves `index` to index.mjs (ESM) or index.js.
const candidates = [`${moduleName}.mjs`, `${moduleName}.js`, `${moduleName}.cjs`];
const file = candidates
  .map((c) => join(assetDir, c))
  .find((f) => {
    try {
      readFileSync(f);
      return true;
    } catch {
      return false;
    }
  });
if (!file) throw new Error(`no ${moduleName}.{mjs,js,cjs} in ${assetDir}`);
process.chdir(assetDir);
const mod = await import(pathToFileURL(file).href);
const handler = mod[exportName];
if (typeof handler !== "function") throw new Error(`${handlerSpec} is not a function`);
const name = process.env.AWS_LAMBDA_FUNCTION_NAME ?? "fn";
const context = {
  callbackWaitsForEmptyEventLoop: false,
  functionName: name,
  functionVersion: "$LATEST",
  invokedFunctionArn: `arn:aws:lambda:${process.env.AWS_REGION}:123456789012:function:${name}`,
  memoryLimitInMB: "512",
  awsRequestId: crypto.randomUUID(),
  logGroupName: `/aws/lambda/${name}`,
  logStreamName: "2026/12/04/[$LATEST]0123456789abcdef",
  getRemainingTimeInMillis: () => 60_000,
  done: () => {},
  fail: () => {},
  succeed: () => {},
};
const result = await handler(JSON.parse(readFileSync(eventFile, "utf8")), context);
writeFileSync(resultFile, JSON.stringify(result ?? null));
