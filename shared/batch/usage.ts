// A batch's usage and, when the route that served its model carries prices, what it cost:
// tokens × the route's price per million (shared/upstream/routes.ts).
import type { RoutePrice } from '../upstream/routes.js';
import type { BatchRecord } from './model.js';

export interface BatchCost {
  currency: string;
  input: number;
  cachedInput: number;
  output: number;
  total: number;
}

/** Rounded to a millionth of the currency unit, so sums print as a person expects. */
const money = (value: number) => Math.round(value * 1e6) / 1e6;

export function batchCost(batch: Pick<BatchRecord, 'usage'>, price: RoutePrice | undefined): BatchCost | null {
  if (!price) return null;
  const { inputTokens, cachedTokens, outputTokens } = batch.usage;
  const cached = Math.min(cachedTokens, inputTokens);
  const input = ((inputTokens - cached) * price.inputPerMillion) / 1e6;
  const cachedInput = (cached * price.cachedInputPerMillion) / 1e6;
  const output = (outputTokens * price.outputPerMillion) / 1e6;
  return {
    currency: price.currency,
    input: money(input),
    cachedInput: money(cachedInput),
    output: money(output),
    total: money(input + cachedInput + output),
  };
}
