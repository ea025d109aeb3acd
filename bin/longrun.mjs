#!/usr/bin/env node
// The `longrun` command (package.json "bin"). The command line is TypeScript: importing tsx
// first does what `node --import tsx` does (it registers tsx's loader), and both tsx and
// the entry are resolved from this file, so `npx longrun` works from any directory.
import "tsx";

await import(new URL("../functions/cli/main.ts", import.meta.url).href);
