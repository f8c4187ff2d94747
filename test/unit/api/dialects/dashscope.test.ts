import { describe, expect, it } from 'vitest';
import { dashScopeListFilter, parseDashScopeTime } from '../../../../shared/api/dialects/dashscope.js';
import { dialectOf } from '../../../../shared/api/dialects/index.js';
import { ApiError } from '../../../../shared/api/errors.js';

describe('the DashScope dialect', () => {
  it('is the dialect of /compatible-mode/v1; /v1 takes its dry run and list filters too', () => {
    expect(dialectOf('/compatible-mode/v1/batches').name).toBe('dashscope');
    expect(dialectOf('/compatible-mode/v1/batches').endpoints).toContain('/v1/chat/ds-test');
    expect(dialectOf('/v1/batches').endpoints).toContain('/v1/chat/ds-test');
    expect(dialectOf('/v4/batches').endpoints).not.toContain('/v1/chat/ds-test');
  });

  it('reads yyyyMMddHHmmss as UTC, and only real instants', () => {
    expect(parseDashScopeTime('20260301123045')).toBe(Date.UTC(2026, 2, 1, 12, 30, 45));
    for (const bad of ['20260231000000', '20261301000000', '20260301246000', '2026030112304', '2026-03-01', '2026030112304５']) {
      expect(parseDashScopeTime(bad)).toBeUndefined();
    }
  });

  it('turns the documented query into one BatchFilter', () => {
    expect(dashScopeListFilter({ limit: '10' })).toBeUndefined();
    expect(
      dashScopeListFilter({
        ds_name: 'weekly',
        input_file_ids: 'file-a, file-b,,',
        status: 'completed,expired,completed',
        create_after: '20260101000000',
        create_before: '20260102000000',
      }),
    ).toEqual({
      createdAfterMs: Date.UTC(2026, 0, 1),
      createdBeforeMs: Date.UTC(2026, 0, 2) + 999,
      statuses: ['completed', 'expired'],
      inputFileIds: ['file-a', 'file-b'],
      metadataContains: { key: 'ds_name', text: 'weekly' },
    });
  });

  it('refuses a bad filter with a 400 naming it', () => {
    for (const [query, param] of [
      [{ status: 'completed,done' }, 'status'],
      [{ status: ',' }, 'status'],
      [{ input_file_ids: ',' }, 'input_file_ids'],
      [{ create_after: 'yesterday' }, 'create_after'],
      [{ ds_name: '' }, 'ds_name'],
    ] as const) {
      const error = (() => {
        try {
          dashScopeListFilter(query);
        } catch (e) {
          return e;
        }
      })();
      expect(error).toBeInstanceOf(ApiError);
      expect(error).toMatchObject({ status: 400, param });
    }
  });
});
