// Build the pages into dist/: type-check, bundle each page's script with esbuild, copy the
// static files. scripts/bootstrap runs this when package-lock.json or the sources change.
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");

execFileSync(join(root, "node_modules", ".bin", "tsc"), ["--noEmit", "-p", root], { stdio: "inherit" });

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
await build({
  entryPoints: {
    widget: join(root, "src/widget.ts"),
    test_ws_chat: join(root, "src/testpage.ts"),
    flow: join(root, "src/flow.ts"),
  },
  outdir: dist,
  bundle: true,
  format: "esm",
  target: ["es2022"],
  minify: true,
  sourcemap: true,
  logLevel: "warning",
});
cpSync(join(root, "public"), dist, { recursive: true });
console.log(`frontend: built ${dist}`);
