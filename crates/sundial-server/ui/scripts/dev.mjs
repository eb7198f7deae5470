// Serves the dashboard from the working tree (no Rust rebuild per edit) and forwards every
// other request to a running server: `node scripts/dev.mjs http://127.0.0.1:7070 [port]`.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { dirname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const ui = join(dirname(fileURLToPath(import.meta.url)), "..");
const upstream = process.argv[2] || "http://127.0.0.1:7070";
const port = Number(process.argv[3] || 7071);
const types = { ".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".html": "text/html", ".txt": "text/plain" };

createServer(async (req, res) => {
  try {
    if (req.url === "/" || req.url.startsWith("/?")) {
      const page = (await readFile(join(ui, "src/index.html"), "utf8")).replaceAll("{{base}}", "/ui/dev");
      res.writeHead(200, { "Content-Type": "text/html" }).end(page);
    } else if (req.url.startsWith("/ui/dev/")) {
      const rel = normalize(req.url.slice("/ui/dev/".length).split("?")[0]);
      const file = rel.startsWith("vendor/") ? join(ui, rel) : join(ui, "src", rel);
      const body = await readFile(file);
      res.writeHead(200, { "Content-Type": types[file.slice(file.lastIndexOf("."))] || "application/octet-stream" }).end(body);
    } else {
      const body = await new Promise((ok) => {
        const chunks = [];
        req.on("data", (c) => chunks.push(c)).on("end", () => ok(Buffer.concat(chunks)));
      });
      const r = await fetch(upstream + req.url, { method: req.method, headers: { ...req.headers, host: undefined }, body: body.length ? body : undefined });
      res.writeHead(r.status, Object.fromEntries(r.headers)).end(Buffer.from(await r.arrayBuffer()));
    }
  } catch (e) {
    res.writeHead(404).end(String(e));
  }
}).listen(port, "127.0.0.1", () => console.log(`dashboard dev server on http://127.0.0.1:${port} → ${upstream}`));
