// A job for the scoped-credentials test: reports which credential variables it was given
// and who the default credential chain says it is (AWS_ENDPOINT_URL: the emulator).
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { GetCallerIdentityCommand, STSClient } from "@aws-sdk/client-sts";

const sts = new STSClient({});
const identity = await sts.send(new GetCallerIdentityCommand({}));
const credentials = await sts.config.credentials();
const given = Object.keys(process.env).filter((k) =>
  /^AWS_(ACCESS|SECRET|SESSION|CONTAINER|PROFILE)/.test(k),
);
writeFileSync(
  join(process.env.LONGRUN_OUTPUT_DIR ?? ".", "result.json"),
  JSON.stringify({ arn: identity.Arn, accessKeyId: credentials.accessKeyId, given: given.sort() }),
);
