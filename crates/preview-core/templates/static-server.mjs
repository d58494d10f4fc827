// The static server of preview-deployer: serves a built front end (or a plain index.html site)
// with Node's standard library only, so the image needs no npm package at run time.
// Usage: node static-server.mjs [root]; listens on $HOST:$PORT (0.0.0.0:8080 by default).
// A path is a file, else a directory's index.html, else <path>.html. Any other path without an
// extension is a client-side route: 200.html or 404.html (with 404) when the site has one, else
// index.html, the SPA fallback. Hidden files (.env, .git) are never served.
import { createServer } from "node:http";
import { createReadStream, readFileSync, statSync } from "node:fs";
import { extname, join, resolve, sep } from "node:path";

const root = resolve(process.argv[2] || ".");
const port = Number(process.env.PORT) || 8080;
const host = process.env.HOST || "0.0.0.0";
const types = {
  ".html": "text/html; charset=utf-8",
  ".htm": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".webmanifest": "application/manifest+json",
  ".txt": "text/plain; charset=utf-8",
  ".xml": "application/xml",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".jpeg": "image/jpeg",
  ".gif": "image/gif",
  ".webp": "image/webp",
  ".avif": "image/avif",
  ".ico": "image/x-icon",
  ".woff": "font/woff",
  ".woff2": "font/woff2",
  ".ttf": "font/ttf",
  ".otf": "font/otf",
  ".wasm": "application/wasm",
  ".pdf": "application/pdf",
  ".mp4": "video/mp4",
  ".webm": "video/webm",
  ".mp3": "audio/mpeg",
};

function isFile(path) {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

// The file for a URL path and its status, or null.
function resolvePath(pathname) {
  const segments = pathname.split("/").filter((s) => s !== "");
  if (segments.some((s) => (s.startsWith(".") && s !== ".well-known") || s.includes("\0"))) {
    return null;
  }
  const full = join(root, ...segments);
  if (full !== root && !full.startsWith(root + sep)) {
    return null;
  }
  for (const candidate of [full, join(full, "index.html"), full + ".html"]) {
    if (isFile(candidate)) {
      return [candidate, 200];
    }
  }
  if (extname(pathname) === "") {
    for (const [name, status] of [["200.html", 200], ["404.html", 404], ["index.html", 200]]) {
      if (isFile(join(root, name))) {
        return [join(root, name), status];
      }
    }
  }
  return isFile(join(root, "404.html")) ? [join(root, "404.html"), 404] : null;
}

// Behind the preview's path prefix (nginx strips it and says so in X-Forwarded-Prefix), links
// to the site root in HTML would leave the preview: point them under the prefix instead.
function prefixed(html, prefix) {
  return html.replace(/(\s(?:src|href|action)=["'])\/(?!\/)/g, `$1${prefix}/`);
}

const server = createServer((req, res) => {
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.writeHead(405, { Allow: "GET, HEAD" }).end();
    return;
  }
  let pathname;
  try {
    pathname = decodeURIComponent(new URL(req.url, "http://localhost").pathname);
  } catch {
    res.writeHead(400).end();
    return;
  }
  const found = resolvePath(pathname);
  if (!found) {
    res.writeHead(404, { "Content-Type": "text/plain; charset=utf-8" }).end("not found\n");
    return;
  }
  const [file, status] = found;
  const type = types[extname(file).toLowerCase()] || "application/octet-stream";
  const headers = { "Content-Type": type, "Cache-Control": "no-cache" };
  const prefix = req.headers["x-forwarded-prefix"];
  if (type.startsWith("text/html") && /^(\/[\w.~-]+)+$/.test(prefix || "")) {
    const body = prefixed(readFileSync(file, "utf8"), prefix);
    res.writeHead(status, { ...headers, "Content-Length": Buffer.byteLength(body) });
    res.end(req.method === "HEAD" ? undefined : body);
    return;
  }
  res.writeHead(status, { ...headers, "Content-Length": statSync(file).size });
  if (req.method === "HEAD") {
    res.end();
    return;
  }
  createReadStream(file)
    .on("error", () => res.destroy())
    .pipe(res);
});

server.listen(port, host, () => console.log(`serving ${root} on http://${host}:${port}`));
