import { describe, expect, it } from 'vitest';
import { systemClock } from '../../../../shared/adapters/local/system-clock.js';
import { dialectOf } from '../../../../shared/api/dialects/index.js';
import { meliousBatchObject } from '../../../../shared/api/dialects/melious.js';
import { refusalError, withErrorSet } from '../../../../shared/batch/one-file.js';
import { createUpstreamRouter } from '../../../../shared/upstream/router.js';
import { testModelUpstream } from '../../../../shared/upstream/test-model.js';
import { batchRecord } from '../../../adapters/meta-store-contract.js';

describe('the Melious dialect', () => {
  it('is the dialect of /melious/v1 and only of it', () => {
    expect(dialectOf('/melious/v1/batches').name).toBe('melious');
    expect(dialectOf('/v1/batches').name).toBe('openai');
    expect(dialectOf('/v1/melious/v1').name).toBe('openai');
  });

  it('names completed succeeded and counts without total, the counts adding up to it', () => {
    const running = meliousBatchObject(batchRecord({ status: 'in_progress', total: 10, completed: 4, failed: 1 }));
    expect(running).toMatchObject({ status: 'in_progress', request_counts: { succeeded: 4, failed: 1, pending: 5 } });
    const done = meliousBatchObject(batchRecord({ status: 'completed', total: 10, completed: 9, failed: 1 }));
    expect(done.status).toBe('succeeded');
    expect(done.request_counts).toEqual({ succeeded: 9, failed: 1, pending: 0 });
    for (const status of ['failed', 'expired', 'cancelled'] as const)
      expect(meliousBatchObject(batchRecord({ status })).status).toBe(status);
  });

  it("sets error on a refused row from the upstream's body, keeping its response", () => {
    const refused = {
      id: 'r',
      custom_id: 'a',
      response: { status_code: 400, request_id: 'q', body: { error: { message: 'no', code: 'X1' } } },
      error: null,
    };
    expect(JSON.parse(withErrorSet(JSON.stringify(refused)))).toEqual({ ...refused, error: { code: 'X1', message: 'no' } });
    expect(refusalError({ status_code: 503, body: '<html>' })).toEqual({
      code: 'http_503',
      message: 'The upstream answered HTTP 503 to this request.',
    });
    const unrun = { id: 'r', custom_id: 'b', response: null, error: { code: 'batch_cancelled', message: 'm' } };
    expect(withErrorSet(JSON.stringify(unrun))).toBe(`${JSON.stringify(unrun)}\n`);
  });

  it('routes a :batch flavored model by its own route first, then by the model without the suffix', () => {
    const routes = [
      { pattern: 'glm-4.7', baseUrl: 'http://glm/v1', apiKey: undefined, maxConcurrency: 1 },
      { pattern: '*:batch', baseUrl: 'http://cheap/v1', apiKey: undefined, maxConcurrency: 1 },
    ];
    const base = { apiKey: undefined, concurrency: 1, timeoutMs: 1, maxAttempts: 1, baseBackoffMs: 1 };
    const router = createUpstreamRouter({ ...base, baseUrl: undefined, routes }, systemClock);
    expect(router.route('glm-4.7:batch')).toBe(router.route('qwen:batch'));
    const noFlavorRoute = createUpstreamRouter({ ...base, baseUrl: undefined, routes: routes.slice(0, 1) }, systemClock);
    expect(noFlavorRoute.route('glm-4.7:batch')).toBe(noFlavorRoute.route('glm-4.7'));
    expect(noFlavorRoute.route('other:batch')).toBeUndefined();
    expect(noFlavorRoute.route('batch-test-model:batch')).toBe(testModelUpstream);
  });
});
