// `npm test` runs the bench as a smoke test of its own machinery (every target relays
// checksummed data); no figure is asserted, speed lives in `npm run bench`.
import { test } from 'node:test';
import { bench, QUICK, summary } from './run.js';

test('bench --quick: every target carries checksummed transfers, echo connections and idle tunnels', async (t) => {
  const r = await bench({ ...QUICK, rounds: 1 }, (l) => l.startsWith('!!!') && t.diagnostic(l));
  t.diagnostic(`quick bench in ${r.seconds.toFixed(1)} s, figures not checked:`);
  for (const line of summary(r).split('\n')) t.diagnostic(line);
});
