// Requests to the API app in process (Hono's app.request), for unit tests of routes.

interface InProcessApp {
  request(url: string, init: RequestInit): Response | Promise<Response>;
}

/** POSTs `body` (a FormData as multipart, anything else as JSON, nothing when undefined); the status and the parsed answer. */
export async function postTo(app: InProcessApp, url: string, body?: unknown): Promise<{ status: number; body: any }> {
  const response = await app.request(url, {
    method: 'POST',
    ...(body instanceof FormData
      ? { body }
      : body === undefined
        ? {}
        : { body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }),
  });
  return { status: response.status, body: await response.json() };
}
