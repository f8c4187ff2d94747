// The order in which waiting work runs when many projects and batches wait at once: deficit
// round-robin with unit costs (one chunk, one request attempt), on two levels. Projects take turns
// one item each, so a project with 20 waiting requests behind another's 20,000 gets every other
// slot; within a project, its batches take turns of `weight` items (a batch's priority), so a
// small batch is not stuck behind a big one of the same project either. A project or batch that
// starts waiting joins the end of the ring and so waits at most one round of the others.
//
// Used by the local chunk queue (which chunk a free worker takes) and by each route's request
// limiter (which waiting request gets a free slot). In AWS the chunk queue is SQS's (see README's
// "Fair sharing"); the limiter is this one, in each worker.

export type Priority = 'high' | 'normal' | 'low';
export const PRIORITIES: readonly Priority[] = ['high', 'normal', 'low'];

/** Items a batch takes in a row on its project's turn: its share of the project's work. */
export const PRIORITY_WEIGHT: Readonly<Record<Priority, number>> = { high: 4, normal: 2, low: 1 };

/** Whose work an item is. Work with no tenant shares one lane. */
export interface Tenant {
  project: string;
  batchId: string;
  priority?: Priority;
}

const NO_TENANT: Tenant = { project: '', batchId: '' };

/** A FIFO with O(1) shift and unshift. */
class Deque<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  unshift(item: T): void {
    if (this.head > 0) this.items[--this.head] = item;
    else this.items.unshift(item);
  }

  shift(): T | undefined {
    if (this.length === 0) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
}

interface BatchLane<T> {
  batchId: string;
  weight: number;
  /** Items this batch may still take in its current turn. */
  credit: number;
  items: Deque<T>;
}

interface ProjectLane<T> {
  project: string;
  /** The batches with waiting items, in turn order; `turn` is the one whose turn it is. */
  batches: BatchLane<T>[];
  byId: Map<string, BatchLane<T>>;
  turn: number;
  size: number;
}

export class FairQueue<T> {
  private readonly projects: ProjectLane<T>[] = [];
  private readonly byProject = new Map<string, ProjectLane<T>>();
  private turn = 0;
  private count = 0;

  get size(): number {
    return this.count;
  }

  /** Items waiting for a project. */
  waitingOf(project: string): number {
    return this.byProject.get(project)?.size ?? 0;
  }

  /** Projects with waiting items, in turn order from the one whose turn it is. */
  waitingProjects(): string[] {
    const n = this.projects.length;
    return Array.from({ length: n }, (_, i) => this.projects[(this.turn + i) % n]!.project);
  }

  /** Adds an item at the end of its batch's line; `first`: at the front of it (a retry of work under way). */
  push(tenant: Tenant | undefined, item: T, options: { first?: boolean } = {}): void {
    const who = tenant ?? NO_TENANT;
    let project = this.byProject.get(who.project);
    if (!project) {
      project = { project: who.project, batches: [], byId: new Map(), turn: 0, size: 0 };
      this.byProject.set(who.project, project);
      // A newcomer waits for the turns of those already waiting, not for their backlogs.
      this.insertBehindTurn(this.projects, project, this.turn, (at) => {
        this.turn = at;
      });
    }
    let batch = project.byId.get(who.batchId);
    if (!batch) {
      const weight = PRIORITY_WEIGHT[who.priority ?? 'normal'];
      batch = { batchId: who.batchId, weight, credit: weight, items: new Deque() };
      project.byId.set(who.batchId, batch);
      const lane = project;
      this.insertBehindTurn(project.batches, batch, project.turn, (at) => {
        lane.turn = at;
      });
    }
    if (options.first) batch.items.unshift(item);
    else batch.items.push(item);
    project.size += 1;
    this.count += 1;
  }

  /** The next item by the turns, or undefined when nothing waits. */
  shift(): T | undefined {
    if (this.count === 0) return undefined;
    return this.takeFrom(this.turn % this.projects.length);
  }

  /**
   * The next item of the first project, in turn order, that `accept` takes (the local queue asks for
   * a project with nothing running); undefined when none does. Other projects keep their turn.
   */
  shiftWhere(accept: (project: string) => boolean): T | undefined {
    const n = this.projects.length;
    for (let i = 0; i < n; i++) {
      const at = (this.turn + i) % n;
      if (accept(this.projects[at]!.project)) return this.takeFrom(at, i === 0);
    }
    return undefined;
  }

  private takeFrom(at: number, passTurn = true): T {
    const project = this.projects[at]!;
    const batchAt = project.turn % project.batches.length;
    const batch = project.batches[batchAt]!;
    const item = batch.items.shift() as T;
    batch.credit -= 1;
    project.size -= 1;
    this.count -= 1;
    if (batch.items.length === 0) {
      project.batches.splice(batchAt, 1);
      project.byId.delete(batch.batchId);
      if (project.batches.length > 0) project.turn = batchAt % project.batches.length;
    } else if (batch.credit <= 0) {
      batch.credit = batch.weight;
      project.turn = (batchAt + 1) % project.batches.length;
    }
    if (project.size === 0) {
      this.projects.splice(at, 1);
      this.byProject.delete(project.project);
      if (this.projects.length > 0 && at < this.turn) this.turn -= 1;
      if (this.projects.length > 0) this.turn %= this.projects.length;
      else this.turn = 0;
    } else if (passTurn) {
      // One item a turn per project: the next project's turn comes.
      this.turn = (at + 1) % this.projects.length;
    }
    return item;
  }

  /** Puts a new lane just before the lane whose turn it is: it comes last in the current round. */
  private insertBehindTurn<L>(ring: L[], lane: L, turn: number, setTurn: (at: number) => void): void {
    if (ring.length === 0) {
      ring.push(lane);
      setTurn(0);
      return;
    }
    const at = turn % ring.length;
    ring.splice(at, 0, lane);
    setTurn(at + 1);
  }
}
