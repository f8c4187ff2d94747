// After `vite build`: the built console (dist/console/) as one JSON module, dist/console-assets.json,
// which shared/api/console.ts imports; so esbuild puts the console in the API's bundle (the API
// Lambda's, and npm start's) and no file has to be found at run time.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = fileURLToPath(new URL('../dist/console/', import.meta.url));
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};
const files = {};
for (const entry of readdirSync(dist, { recursive: true, withFileTypes: true })) {
  if (!entry.isFile()) continue;
  const full = path.join(entry.parentPath, entry.name);
  const name = path.relative(dist, full).split(path.sep).join('/');
  const type = TYPES[path.extname(name)];
  if (!type) throw new Error(`the console build has ${name}, of a type the embedding does not know`);
  files[name] = { type, body: readFileSync(full, 'utf8') };
}
writeFileSync(fileURLToPath(new URL('../dist/console-assets.json', import.meta.url)), JSON.stringify({ files }));
