// Zhipu (seed zhipu-glm-batch-api.txt), at /v4 and /api/paas/v4 (the zhipuai SDK's base URL):
// OpenAI's shapes, input lines whose url is /v4/... (their /v1 alias), the SDK's signed tokens
// (shared/api/signed-tokens.ts), and `auto_delete_input_file`, which the newest SDK sends as true
// on every create: the input file is deleted once the batch is final.
import { z } from 'zod';
import { BATCH_ENDPOINTS } from '../../batch/rules.js';
import { toBatchObject } from '../objects.js';
import { parse } from '../request.js';
import type { AuthErrorCode, Dialect } from './dialect.js';

/** Zhipu's documented authentication error codes (its error-code table, 1000-1004). */
const ZHIPU_AUTH_CODES: Record<AuthErrorCode, string> = {
  invalid_api_key: '1000',
  missing_api_key: '1001',
  invalid_token: '1002',
  token_expired: '1003',
};

const zhipuCreate = z.object({
  auto_delete_input_file: z.boolean({ error: 'auto_delete_input_file must be true or false' }).optional(),
});

export const zhipuDialect: Dialect = {
  name: 'zhipu',
  basePaths: ['/v4', '/api/paas/v4'],
  endpoints: BATCH_ENDPOINTS,
  batchObject: toBatchObject,
  createOptions: (body) => {
    const { auto_delete_input_file } = parse(zhipuCreate, body);
    return { dialect: 'zhipu', ...(auto_delete_input_file ? { autoDeleteInputFile: true } : {}) };
  },
  listFilter: () => undefined,
  authErrorCode: (code) => ZHIPU_AUTH_CODES[code],
};
