// Chained gateways on loopback (RFC 3089 §4): g1 --upstream g2. Names are known only to g2's
// hosts file, so a page fetched by name through g1 proves the last gateway resolved it; g2's
// reply codes reach the client unchanged; --upstream-rules keeps chosen names direct.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { CMD, REP } from '../../../shared/socks5/constants.js';
import { bindSecondReply, dialSocks5 } from '../../../bridge/upstream/socks5.js';
import { closedTcpPort, readAll, sha256, startOrigin, startTcp, type Origin } from '../../helpers/origin.js';
import { CLI, run, startCli, type Running } from '../../helpers/process.js';

const dir = mkdtempSync(join(tmpdir(), 'dualsocks-chain-'));
const farHosts = join(dir, 'far-hosts');
writeFileSync(farHosts, '127.0.0.1 far.test\n127.0.0.1 both.test\n');
const nearHosts = join(dir, 'near-hosts');
writeFileSync(nearHosts, '127.0.0.1 near.test\n10.1.2.3 lan.test\n');
const rules = join(dir, 'upstream-rules.json');
writeFileSync(rules, JSON.stringify({ mode: 'except', rules: ['near.test', 'lan.test'], bypass: [] }));

async function curl(port: number, url: string, user = ''): Promise<{ code: number | null; body: Buffer; stderr: string }> {
  const r = await run('curl', ['-sS', '--max-time', '20', '--proxy', `socks5h://${user}127.0.0.1:${port}`, url]);
  return { code: r.code, body: r.stdout, stderr: r.stderr };
}

const repOf = (rep: number) => (e: { rep?: number }): boolean => e.rep === rep;

describe('chained gateways on loopback', () => {
  let origin: Origin;
  let g2: Running; // the far gateway: knows the names, requires a user
  let mid: Running; // a plain middle hop
  let g1: Running; // everything upstream through g2
  let g1rules: Running; // near.test direct, the rest upstream
  let g1two: Running; // two hops: mid, then g2
  const p = (r: Running): number => r.listening[0]!.port;

  before(async () => {
    origin = await startOrigin('127.0.0.1', 3 * 1024 * 1024 + 5);
    const pw = await run(process.execPath, [CLI, 'passwd', 'hop'], { input: 'chain pass\n' });
    assert.equal(pw.code, 0, pw.stderr);
    writeFileSync(join(dir, 'users'), pw.stdout);
    g2 = await startCli(['gateway', '--listen', '127.0.0.1:0', '--users', join(dir, 'users'), '--hosts', farHosts, '--dns', 'none', '--allow', '127.0.0.0/8', '--bind-timeout', '1']);
    const up = `socks5://hop:chain%20pass@127.0.0.1:${p(g2)}`;
    mid = await startCli(['gateway', '--listen', '127.0.0.1:0', '--dns', 'none', '--allow', '127.0.0.1']);
    // no --hosts and no resolver: g1 cannot resolve far.test itself
    g1 = await startCli(['gateway', '--listen', '127.0.0.1:0', '--dns', 'none', '--upstream', up]);
    g1rules = await startCli(['gateway', '--listen', '127.0.0.1:0', '--hosts', nearHosts, '--dns', 'none', '--allow', '127.0.0.1', '--upstream', up, '--upstream-rules', rules]);
    g1two = await startCli(['gateway', '--listen', '127.0.0.1:0', '--dns', 'none', '--upstream', `socks5://127.0.0.1:${p(mid)}`, '--upstream', up]);
  });
  after(async () => {
    await Promise.all([g1, g1rules, g1two, mid, g2].map((g) => g?.stop()));
    await origin.close();
  });

  test('a name only the last gateway knows: fetched byte-exact, resolved there, g1 logs the upstream', async () => {
    const r = await curl(p(g1), `http://far.test:${origin.port}/blob.bin`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha256(r.body), origin.blobSha256);
    const near = await g1.waitRecord((x) => x.host === 'far.test');
    assert.equal(near.result, 'ok');
    assert.equal(near.upstream, `socks5://hop:***@127.0.0.1:${p(g2)}`);
    assert.equal(near.address, undefined, 'g1 resolved nothing');
    const far = await g2.waitRecord((x) => x.host === 'far.test');
    assert.equal(far.result, 'ok');
    assert.equal(far.user, 'hop');
    assert.equal(far.address, '127.0.0.1');
    assert.equal(far.family, 4);
    // BND from the last hop is what our client saw
    assert.equal(near.bound, far.bound);
    assert.ok(Number(near.bytesDown) > origin.blob.length);
  });

  test("the last gateway's REP reaches the client unchanged", async () => {
    const closedPort = await closedTcpPort();
    // and its exact error code (METHOD.ERROR_CODES), passed back by the gateway in between
    const cases: [string, number, number, string][] = [
      ['nowhere.test', origin.port, REP.HOST_UNREACHABLE, 'ERR_NAME_NOT_FOUND'],
      ['far.test', closedPort, REP.CONNECTION_REFUSED, 'ERR_CONNECTION_REFUSED'],
      ['10.1.2.3', 80, REP.NOT_ALLOWED, 'ERR_POLICY_DESTINATION'],
    ];
    for (const [host, port, rep, code] of cases) {
      await assert.rejects(dialSocks5({ host: '127.0.0.1', port: p(g1) }, { host, port }, { timeoutMs: 5000 }), (e: { rep: number; code: string }) => e.rep === rep && e.code === code, `${host}:${port} → ${rep} ${code}`);
      const rec = await g1.waitRecord((x) => x.host === host && x.port === port);
      assert.equal(rec.rep, rep);
      assert.equal(rec.result, code);
    }
    const c = await curl(p(g1), `http://nowhere.test:${origin.port}/`);
    assert.equal(c.code, 97, c.stderr);
    assert.match(c.stderr, /\(4\)/);

    // an unreachable upstream is a general failure, not a statement about the destination
    const dead = await startCli(['gateway', '--listen', '127.0.0.1:0', '--dns', 'none', '--upstream', `socks5://127.0.0.1:${closedPort}`]);
    try {
      await assert.rejects(dialSocks5({ host: '127.0.0.1', port: p(dead) }, { host: 'far.test', port: 80 }, { timeoutMs: 5000 }), repOf(REP.GENERAL_FAILURE));
      const rec = await dead.waitRecord((x) => x.host === 'far.test');
      assert.equal(rec.result, 'ERR_CONNECT_FAILED');
      assert.match(String(rec.error), /upstream socks5:\/\/127\.0\.0\.1:\d+: .*refused/);
    } finally {
      await dead.stop();
    }
  });

  test('an IP literal goes upstream too, checked by the upstream policy, not ours', async () => {
    // g1 has no --allow: 127.0.0.1 would be refused locally; g2 allows it and reaches its own loopback
    const r = await curl(p(g1), `http://127.0.0.1:${origin.port}/`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.body.toString(), 'hello from origin');
  });

  test('--upstream-rules: a listed name goes direct (resolved here), the rest upstream', async () => {
    const near = await curl(p(g1rules), `http://near.test:${origin.port}/`);
    assert.equal(near.code, 0, near.stderr);
    const nearRec = await g1rules.waitRecord((x) => x.host === 'near.test');
    assert.equal(nearRec.upstream, undefined);
    assert.equal(nearRec.address, '127.0.0.1');
    const far = await curl(p(g1rules), `http://far.test:${origin.port}/blob.bin`);
    assert.equal(far.code, 0, far.stderr);
    assert.equal(sha256(far.body), origin.blobSha256);
    const farRec = await g1rules.waitRecord((x) => x.host === 'far.test');
    assert.ok(farRec.upstream);
    // direct requests still face our own policy
    await assert.rejects(dialSocks5({ host: '127.0.0.1', port: p(g1rules) }, { host: 'lan.test', port: 80 }, { timeoutMs: 5000 }), repOf(REP.NOT_ALLOWED));
    const lanRec = await g1rules.waitRecord((x) => x.host === 'lan.test');
    assert.equal(lanRec.result, 'ERR_POLICY_DESTINATION');
    assert.equal(lanRec.upstream, undefined);
  });

  test('two hops: g1 → mid → g2 → origin', async () => {
    const r = await curl(p(g1two), `http://both.test:${origin.port}/blob.bin`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha256(r.body), origin.blobSha256);
    const midRec = await mid.waitRecord((x) => x.port === p(g2));
    assert.equal(midRec.host, '127.0.0.1');
    const far = await g2.waitRecord((x) => x.host === 'both.test');
    assert.equal(far.result, 'ok');
  });

  test('BIND through the chain: the far gateway listens, both replies and the data come back', async () => {
    const dial = await dialSocks5({ host: '127.0.0.1', port: p(g1) }, { cmd: CMD.BIND, host: '127.0.0.1', port: 0 }, { timeoutMs: 5000 });
    const second = bindSecondReply(dial);
    const peer: Socket = connect({ host: '127.0.0.1', port: dial.reply.port, allowHalfOpen: true });
    await new Promise((r) => peer.once('connect', r));
    const { reply } = await second;
    assert.equal(reply.port, peer.localPort);
    const up = randomBytes(1024 * 1024 + 1);
    const down = randomBytes(2 * 1024 * 1024 + 3);
    const atPeer = readAll(peer);
    const atClient = readAll(dial.socket);
    dial.socket.resume();
    dial.socket.end(up);
    peer.end(down);
    assert.equal(sha256(await atPeer), sha256(up));
    assert.equal(sha256(await atClient), sha256(down));
    const farRec = await g2.waitRecord((x) => x.cmd === 'bind' && x.result === 'ok');
    assert.equal(farRec.peer, '127.0.0.1');
    const nearRec = await g1.waitRecord((x) => x.cmd === 'bind' && x.result === 'ok');
    assert.equal(nearRec.peer, '127.0.0.1');

    // the far gateway's wait times out: its REP 0x06 is what our client gets
    const idle = await dialSocks5({ host: '127.0.0.1', port: p(g1) }, { cmd: CMD.BIND, host: '127.0.0.1', port: 0 }, { timeoutMs: 5000 });
    await assert.rejects(bindSecondReply(idle), repOf(REP.TTL_EXPIRED));
  });

  test('config errors name the key', async () => {
    const bad = await run(process.execPath, [CLI, 'gateway', '--listen', '127.0.0.1:0', '--upstream', 'http://x:1']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /upstream\[0\]: "http:\/\/x:1" is not socks5:/);
    const lone = await run(process.execPath, [CLI, 'gateway', '--listen', '127.0.0.1:0', '--upstream-rules', rules]);
    assert.equal(lone.code, 2);
    assert.match(lone.stderr, /upstreamRules: needs --upstream/);
    writeFileSync(join(dir, 'bad-rules.json'), JSON.stringify({ mode: 'some' }));
    const badRules = await run(process.execPath, [CLI, 'gateway', '--listen', '127.0.0.1:0', '--upstream', 'socks5://127.0.0.1:1', '--upstream-rules', join(dir, 'bad-rules.json')]);
    assert.equal(badRules.code, 2);
    assert.match(badRules.stderr, /upstreamRules: .*mode/);
  });
});
