// Copies the pinned browser libraries from node_modules/ into vendor/, which is committed and
// embedded into the binary at build time (the server needs no npm and the page no CDN).
// Run after changing a version in package.json: `npm ci && npm run vendor`.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const ui = join(dirname(fileURLToPath(import.meta.url)), "..");
const nm = join(ui, "node_modules");
const out = join(ui, "vendor");
mkdirSync(out, { recursive: true });

// [source under node_modules, file name in vendor/]
const files = [
  ["preact/dist/preact.mjs", "preact.mjs"],
  ["preact/hooks/dist/hooks.mjs", "preact-hooks.mjs"],
  ["htm/dist/htm.mjs", "htm.mjs"],
  ["uplot/dist/uPlot.esm.js", "uplot.mjs"],
  ["uplot/dist/uPlot.min.css", "uplot.css"],
];
for (const [src, dst] of files) {
  // Source maps are not shipped, so their trailing pointer would only cause 404s.
  const text = readFileSync(join(nm, src), "utf8").replace(/\n?\/\/# sourceMappingURL=.*\s*$/, "\n");
  writeFileSync(join(out, dst), text);
}
const licenses = ["preact", "htm", "uplot"].map((p) => {
  const pkg = JSON.parse(readFileSync(join(nm, p, "package.json"), "utf8"));
  return `${p} ${pkg.version}\n\n${readFileSync(join(nm, p, "LICENSE"), "utf8")}`;
});
writeFileSync(join(out, "LICENSES.txt"), licenses.join("\n\n----\n\n"));
console.log(`vendored ${files.length} files into ${out}`);
