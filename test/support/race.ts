// Racing writes in the store contracts. DynamoDB serializes conditional writes to one item; moto's
// threaded server may let two both pass (or lose an ADD), so on moto a racing case sends its calls
// one at a time and expects exactly the same outcome.

/** Runs the calls all at once, or one after the other where the backend cannot take them at once. */
export async function race<T>(calls: (() => Promise<T>)[], serialize: boolean): Promise<T[]> {
  if (!serialize) return Promise.all(calls.map((call) => call()));
  const results: T[] = [];
  for (const call of calls) results.push(await call());
  return results;
}
