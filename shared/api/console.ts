// The console (console/: a static app built by `npm run build:console`) served at /console/ by the
// same app as the API: locally by npm start, in AWS by the API Lambda (API Gateway routes every
// path to it). The build is embedded in the bundle as JSON (console/embed.mjs), so nothing is read
// from disk at run time. The page holds no secret: it asks for the key and keeps it in the tab.
import type { Env, Hono } from 'hono';
import built from '../../dist/console-assets.json' with { type: 'json' };

interface Asset {
  type: string;
  body: string;
}

const assets = (built as { files: Record<string, Asset> }).files;

/** Scripts, styles and calls from this origin only; no framing; no referrer (the page's URL carries no secret anyway). */
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' blob: data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'referrer-policy': 'no-referrer',
  'x-content-type-options': 'nosniff',
};

export function registerConsoleRoutes<E extends Env>(app: Hono<E>): void {
  const serve = (name: string, immutable: boolean) => {
    const asset = assets[name];
    if (!asset) return undefined;
    return new Response(asset.body, {
      headers: {
        ...SECURITY_HEADERS,
        'content-type': asset.type,
        // Built assets carry a content hash in their names; the page itself is always asked again.
        'cache-control': immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
      },
    });
  };
  // Relative, so that it holds under any path prefix (an API Gateway stage).
  app.get('/console', () => new Response(null, { status: 308, headers: { location: 'console/' } }));
  app.get('/console/', (c) => serve('index.html', false) ?? c.notFound());
  app.get('/console/assets/:name', (c) => serve(`assets/${c.req.param('name')}`, true) ?? c.notFound());
}
