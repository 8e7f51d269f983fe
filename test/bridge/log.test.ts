// The log lines are typed per command: a misspelt or missing field fails `npm run typecheck`
// (the @ts-expect-error lines below stop compiling when a record type loosens), and jsonLines
// writes each record as it is, behind its time.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { jsonLines, type BridgeLine, type GatewayBindLine, type GatewayConnectLine, type GatewayLine, type GatewayUdpLine } from '../../bridge/log.js';

test('records are checked by command: fields of another command, misspelt or missing ones do not compile', () => {
  const connect: GatewayConnectLine = { client: '127.0.0.1', clientPort: 5000, cmd: 'connect', host: 'example.test', port: 80, address: '192.0.2.1', family: 4, result: 'ok', durationMs: 3 };
  // @ts-expect-error: a misspelt field
  const misspelt: GatewayConnectLine = { client: '127.0.0.1', clientPort: 5000, cmd: 'connect', host: 'example.test', port: 80, adress: '192.0.2.1', result: 'ok', durationMs: 3 };
  // @ts-expect-error: a field of UDP ASSOCIATE on a CONNECT line
  const foreign: GatewayConnectLine = { client: '127.0.0.1', clientPort: 5000, cmd: 'connect', host: 'example.test', port: 80, droppedSize: 1, result: 'ok', durationMs: 3 };
  // @ts-expect-error: a line without its result
  const missing: GatewayBindLine = { client: '127.0.0.1', clientPort: 5000, cmd: 'bind', host: '0.0.0.0', port: 0, durationMs: 3 };
  // @ts-expect-error: a family that is not 4 or 6
  const family: GatewayBindLine = { client: '127.0.0.1', clientPort: 5000, cmd: 'bind', host: '0.0.0.0', port: 0, family: 5, result: 'ok', durationMs: 3 };
  // @ts-expect-error: a bridge CONNECT tunnel has no UDP counters
  const bridge: BridgeLine = { inbound: 'connect', client: '::1', clientPort: 1, host: 'a.test', port: 443, dropped: 1, result: 'ok', durationMs: 1 };
  const udp: GatewayUdpLine = { client: '::1', clientPort: 1, cmd: 'udp', host: '0.0.0.0', port: 0, datagramsUp: 1, droppedSource: 2, end: 'closed', result: 'ok', durationMs: 1 };
  // the union narrows on the command: a UDP line's counters are reachable only as one
  const lines: GatewayLine[] = [connect, udp];
  const drops = lines.map((l) => (l.cmd === 'udp' ? (l.droppedSource ?? 0) : 0));
  assert.deepEqual(drops, [0, 2]);
  void [misspelt, foreign, missing, family, bridge];
});

test('jsonLines writes the record behind its time, field order kept', () => {
  const out: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: string) => out.push(chunk) > 0) as typeof process.stdout.write;
  try {
    jsonLines({ client: '127.0.0.1', clientPort: 5000, cmd: 'connect', host: 'example.test', port: 80, bytesUp: 1, bytesDown: 2, end: 'closed', result: 'ok', durationMs: 3 });
  } finally {
    process.stdout.write = write;
  }
  assert.equal(out.length, 1);
  assert.match(out[0]!, /^\{"time":"[^"]+","client":"127\.0\.0\.1","clientPort":5000,"cmd":"connect","host":"example\.test","port":80,"bytesUp":1,"bytesDown":2,"end":"closed","result":"ok","durationMs":3\}\n$/);
});
