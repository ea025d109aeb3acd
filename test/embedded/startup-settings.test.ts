/**
 * Start-up checks of the embedded server that need no server: the listen address against
 * the default token, and the signing key file.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  ArtifactUrlSigner,
  KeyFileError,
} from "../../functions/adapters/embedded/artifact-urls.ts";
import { isLoopbackHost, readLocalSettings, StartupError } from "../../functions/local/env.ts";
import { tempDir } from "../runner/helpers.ts";

describe("listen address and the default token", () => {
  it("knows loopback addresses from the rest", () => {
    for (const host of [
      "127.0.0.1",
      "127.1.2.3",
      "localhost",
      "::1",
      "[::1]",
      "0:0:0:0:0:0:0:1",
      "::ffff:127.0.0.1",
    ]) {
      expect(isLoopbackHost(host), host).toBe(true);
    }
    for (const host of [
      "0.0.0.0",
      "::",
      "10.0.0.5",
      "192.168.1.1",
      "::ffff:10.0.0.1",
      "example.com",
      "128.0.0.1",
    ]) {
      expect(isLoopbackHost(host), host).toBe(false);
    }
  });

  it("refuses a non-loopback host without LONGRUN_TOKENS, accepts it with tokens", () => {
    expect(() => readLocalSettings({ LONGRUN_HOST: "0.0.0.0" }, "/")).toThrow(StartupError);
    expect(() => readLocalSettings({ LONGRUN_HOST: "0.0.0.0" }, "/")).toThrow(/LONGRUN_TOKENS/);
    const ok = readLocalSettings({ LONGRUN_HOST: "0.0.0.0", LONGRUN_TOKENS: "s3cret:acme" }, "/");
    expect(ok.host).toBe("0.0.0.0");
    expect(readLocalSettings({}, "/").defaultTokens).toBe(true);
  });
});

describe("signing key file", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await tempDir("keyfile");
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("creates a whole 32-byte key, 0600, leaving no temporary file, and reads it back", () => {
    const path = join(dir, "sub", "artifact-url.key");
    const key = ArtifactUrlSigner.keyFromFile(path);
    expect(key.length).toBe(32);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(readdirSync(join(dir, "sub"))).toEqual(["artifact-url.key"]);
    expect(Buffer.from(readFileSync(path, "utf8"), "base64").equals(key)).toBe(true);
    expect(ArtifactUrlSigner.keyFromFile(path).equals(key)).toBe(true);
  });

  it("refuses an empty or short key, naming the file", () => {
    mkdirSync(dir, { recursive: true });
    const path = join(dir, "artifact-url.key");
    for (const content of ["", "\n", Buffer.alloc(31, 9).toString("base64")]) {
      writeFileSync(path, content);
      expect(() => ArtifactUrlSigner.keyFromFile(path)).toThrow(KeyFileError);
      expect(() => ArtifactUrlSigner.keyFromFile(path)).toThrow(path);
    }
  });
});
