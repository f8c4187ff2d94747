// The in-flight budget of answer bytes: new requests wait while it is spent, answers being read
// wait for room except the oldest, and everything held comes back on release.
import { describe, expect, it } from 'vitest';
import { ResponseBudget } from '../../../shared/upstream/response-budget.js';

const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('ResponseBudget', () => {
  it('lets requests start while it is not spent, and holds them once it is, until bytes come back', async () => {
    const budget = new ResponseBudget(100);
    expect(budget.roomToStart()).toBeUndefined();
    const first = budget.lease();
    await first.take(100);
    first.doneReading();
    expect(budget.usedBytes).toBe(100);

    let started = false;
    const waiting = budget.roomToStart()!.then(() => (started = true));
    await settle();
    expect(started).toBe(false);
    expect(budget.waiting).toBe(1);
    first.release();
    await waiting;
    expect(started).toBe(true);
    expect(budget.usedBytes).toBe(0);
    first.release(); // again is harmless
    expect(budget.usedBytes).toBe(0);
  });

  it('lets the oldest answer being read past the budget only when all that is held is being read', async () => {
    const budget = new ResponseBudget(100);
    const oldest = budget.lease();
    const younger = budget.lease();
    await oldest.take(60);
    await younger.take(30);

    let youngerGot = false;
    const youngerTake = younger.take(30).then(() => (youngerGot = true));
    // Over the budget, but every byte held is still being read: nothing else would give room back.
    await oldest.take(60);
    expect(budget.usedBytes).toBe(150);
    await settle();
    expect(youngerGot).toBe(false);

    // Read whole: its line will be written and its bytes let go of, which needs no budget. Until
    // then the younger answer waits, so at most the budget and one answer are ever held.
    oldest.doneReading();
    await settle();
    expect(youngerGot).toBe(false);
    oldest.release();
    await youngerTake;
    expect(budget.usedBytes).toBe(60);
    expect(budget.peakBytes).toBe(150);
    younger.release();
    expect(budget.usedBytes).toBe(0);
  });

  it('refuses a budget that is not positive', () => {
    expect(() => new ResponseBudget(0)).toThrow(/positive/);
  });
});
