// Every dialect the API speaks, each at its base paths.
import { dashScopeDialect } from './dashscope.js';
import { type Dialect, openAiDialect } from './dialect.js';
import { meliousDialect } from './melious.js';
import { zhipuDialect } from './zhipu.js';

export type { AuthErrorCode, Dialect } from './dialect.js';

export const DIALECTS: readonly Dialect[] = [openAiDialect, zhipuDialect, dashScopeDialect, meliousDialect];

const byBasePath = DIALECTS.flatMap((dialect) => dialect.basePaths.map((base) => ({ base: `${base}/`, dialect })));

/** The dialect of the base path a request came by (OpenAI's for any other path). */
export function dialectOf(path: string): Dialect {
  return byBasePath.find(({ base }) => path.startsWith(base))?.dialect ?? openAiDialect;
}
