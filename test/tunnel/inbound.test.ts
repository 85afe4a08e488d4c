/**
 * The inbound budget on its own: what it pauses and resumes, for which byte counts.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { InboundBudget, type Reader } from '../../src/tunnel/inbound';

const inbound = suite('inbound budget');

function reader(): Reader & { calls: string[] } {
  const calls: string[] = [];
  return { calls, pause: () => calls.push('pause'), resume: () => calls.push('resume') };
}

inbound('the reader pauses only above the budget, and resumes below half of it', () => {
  const r = reader();
  const budget = new InboundBudget(r, 1000);
  budget.retain(600);
  budget.retain(400);
  assert.equal(r.calls, [], 'exactly the budget: still reading');
  budget.retain(1);
  assert.equal(r.calls, ['pause']);
  assert.ok(budget.isPaused);
  budget.retain(5000);
  assert.equal(r.calls, ['pause'], 'paused once');
  budget.release(5001);
  assert.is(budget.pendingBytes, 1000);
  budget.release(500);
  assert.equal(r.calls, ['pause'], 'half the budget: still paused');
  budget.release(1);
  assert.equal(r.calls, ['pause', 'resume']);
  assert.not.ok(budget.isPaused);
  assert.is(budget.pendingBytes, 499);
});

inbound('releases without a pause never resume', () => {
  const r = reader();
  const budget = new InboundBudget(r, 1000);
  budget.retain(900);
  budget.release(900);
  assert.equal(r.calls, []);
});

inbound.run();
