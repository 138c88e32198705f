// Builds the console's bundle into ../dist, which the Go package embeds:
// src/app.js with @nats-io/nats-core bundled in (no CDN at run time), and
// the static files beside it, copied. The output depends only on the
// sources and the versions package-lock.json pins.
//
//   node build.mjs           write ../dist
//   node build.mjs --check   fail if ../dist differs from what the sources build
import { build } from "esbuild";
import { readFileSync, writeFileSync, mkdirSync, existsSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, "src");
const dist = join(here, "..", "dist");
const check = process.argv.includes("--check");

const out = new Map();
const result = await build({
  entryPoints: [join(src, "app.js")],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022"],
  platform: "browser",
  legalComments: "eof",
  write: false,
  outfile: join(dist, "app.js"),
  logLevel: "warning",
});
for (const f of result.outputFiles) {
  out.set("app.js", Buffer.from(f.contents));
}
for (const name of ["index.html", "style.css", "favicon.svg"]) {
  out.set(name, readFileSync(join(src, name)));
}

if (check) {
  const stale = [];
  for (const [name, data] of out) {
    const p = join(dist, name);
    if (!existsSync(p) || !readFileSync(p).equals(data)) {
      stale.push(name);
    }
  }
  for (const name of existsSync(dist) ? readdirSync(dist) : []) {
    if (!out.has(name)) {
      stale.push(`${name} (not built from src)`);
    }
  }
  if (stale.length > 0) {
    console.error(`console/dist does not match console/web/src: ${stale.join(", ")}; run npm run build in console/web and commit console/dist`);
    process.exit(1);
  }
  console.log("console/dist matches its sources");
} else {
  mkdirSync(dist, { recursive: true });
  for (const [name, data] of out) {
    writeFileSync(join(dist, name), data);
  }
  console.log(`wrote ${[...out.keys()].join(", ")} to console/dist (app.js: ${out.get("app.js").length} bytes)`);
}
