// Fake-address delegation (RFC 3089 §3, issue 11) with real programs: in the IPv4-only client c4,
// whose resolv.conf names ONLY the bridge's --dns-listen, curl --socks5 and --socks4 resolve the
// name themselves (the bridge's DNS answers a fake address) and still load a page from the
// IPv6-only server by a name only the gateway knows. The bridge's upstream is c4's logging
// dnsmasq: it must see no query for the proxied name (also after a type 65 query) and the query
// for a DIRECT name. Across a restart, --fake-state keeps an address handed out before it working;
// without it the address is refused, never sent anywhere. And the IPv6-only client c6 reaches the
// IPv4-only server the same way through a fake AAAA answer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { rootNetns } from '../helpers/env.js';
import { startCli, type Running } from '../helpers/process.js';
import { eventually } from '../helpers/settle.js';
import { createTopology, ADDR, ALLOW_DESTINATIONS, NAMES, GW_DNS, type Topology } from './netns.js';
import { anyAddress, makeUsersFile, startGateway } from './fixtures.js';

const skip = rootNetns();
const USER = 'alice';
const PASS = 'correct-horse_7';
const GW_PORT = 1081;
/** The bridge's DNS in c4; the topology's logging dnsmasq has 127.0.0.1:53. */
const DNS = '127.0.0.2';
/** A plain name: the default bypass list sends it DIRECT, so its query is forwarded. */
const DIRECT_NAME = 'directhost';

interface FakeStatus {
  recent: { host: string; fakeAddress?: string; via: string; result: string }[];
  fake: { size: { 4: number; 6: number }; recent: { name: string; address: string; refs: number }[]; forwarded: number } | null;
}

test('fake-address DNS on the bridge: programs that resolve locally reach the other family by name', { skip }, async (t) => {
  const topo: Topology = await createTopology();
  const running: Running[] = [];
  try {
    const usersFile = await makeUsersFile(topo.dir, USER, PASS);
    const gw = await startGateway(topo.ns.gw, anyAddress(GW_PORT), ['--users', usersFile, '--hosts', topo.hostsFile, '--dns', `${GW_DNS.host}:${GW_DNS.port}`, '--connect-timeout', '5', ...ALLOW_DESTINATIONS], running);
    // c4's programs ask the bridge, and nothing else
    writeFileSync(`/etc/netns/${topo.ns.c4}/resolv.conf`, `nameserver ${DNS}\noptions timeout:2 attempts:1\n`);
    const fakeState = join(topo.dir, 'fake-state.json');

    const startBridge = async (extra: string[]): Promise<{ bridge: Running; proxy: string }> => {
      const args = ['bridge', '--listen', '127.0.0.1:0', '--gateway', `socks5://${USER}:${PASS}@${ADDR.gw.c4}:${GW_PORT}`, '--connect-timeout', '5', '--dns-listen', `${DNS}:53`, '--dns-upstream', '127.0.0.1:53', ...extra];
      const bridge = await startCli(args, { netns: topo.ns.c4 });
      running.push(bridge);
      await bridge.waitStderr(new RegExp(`fake-address DNS on ${DNS.replace(/\./g, '\\.')}:53 `));
      return { bridge, proxy: `127.0.0.1:${bridge.listening[0]!.port}` };
    };
    const stop = async (b: Running): Promise<void> => {
      await b.stop();
      running.splice(running.indexOf(b), 1);
    };
    const curl = (args: string[], url: string) => topo.exec('c4', 'curl', ['-sS', '--max-time', '30', ...args, url], { timeoutMs: 60000 });
    const dig = async (name: string, type: string): Promise<string> => {
      const r = await topo.exec('c4', 'dig', ['+time=3', '+tries=1', `@${DNS}`, name, type]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.toString();
    };
    const fakeStatus = async (proxy: string): Promise<FakeStatus> => {
      const r = await topo.exec('c4', 'curl', ['-sS', '--fail', '--noproxy', '*', '--max-time', '10', `http://${proxy}/api/status`]);
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout.toString()) as FakeStatus;
    };

    await t.test(`IPv6-only c6: curl --socks5 resolving through the bridge's DNS (fake AAAA) loads ${NAMES.v4only} from the IPv4-only server`, async () => {
      // c6's loopback resolver is its logging dnsmasq: the bridge's DNS takes c6's link address
      const dns6 = ADDR.c6;
      writeFileSync(`/etc/netns/${topo.ns.c6}/resolv.conf`, `nameserver ${dns6}\noptions timeout:2 attempts:1\n`);
      const b6 = await startCli(['bridge', '--listen', '[::1]:0', '--gateway', `socks5://${USER}:${PASS}@[${ADDR.gw.c6}]:${GW_PORT}`, '--connect-timeout', '5', '--dns-listen', `[${dns6}]:53`, '--clients', `${dns6}/128`, '--clients', '::1/128', '--dns-upstream', '[::1]:53'], { netns: topo.ns.c6 });
      running.push(b6);
      await b6.waitStderr(/fake-address DNS on \[2001:db8:c6::2\]:53 /);
      const r = await topo.exec('c6', 'curl', ['-sS', '--fail', '--max-time', '30', '--socks5', `[::1]:${b6.listening[0]!.port}`, `http://${NAMES.v4only}/index.html`], { timeoutMs: 60000 });
      assert.equal(r.code, 0, `${r.stderr}\n${b6.stderr.join('\n')}`);
      assert.equal(r.stdout.toString(), topo.index.s4);
      const rec = await b6.waitRecord((x) => x.result === 'ok');
      // logged by the name, the fake address it came as beside it
      assert.equal(rec.host, NAMES.v4only, JSON.stringify(rec));
      assert.match(String(rec.fakeAddress), /^2001:2::/, JSON.stringify(rec));
      assert.equal(topo.queriesFor('c6', NAMES.v4only), 0);
      await stop(b6);
    });

    let { bridge, proxy } = await startBridge(['--fake-state', fakeState]);
    let fakeIp = '';

    await t.test(`curl --socks5 and --socks4 (local resolution through the bridge's DNS) load ${NAMES.v6only} from the IPv6-only server`, async () => {
      for (const opt of ['--socks5', '--socks4']) {
        const r = await curl(['--fail', opt, proxy], `http://${NAMES.v6only}/index.html`);
        assert.equal(r.code, 0, `${opt}: ${r.stderr}\n${bridge.stderr.join('\n')}`);
        assert.equal(r.stdout.toString(), topo.index.s6, opt);
      }
      // what curl connected to: a fake address (curl --socks5 may take the AAAA one), sent on as the name
      // curl is done when the page came; the bridge logs a tunnel at its end, a moment later
      await eventually(() => bridge.records().filter((r) => r.result === 'ok').length >= 2, 'both tunnels logged', { describe: () => bridge.records() });
      const recs = bridge.records().filter((r) => r.result === 'ok');
      for (const r of recs) {
        assert.equal(r.host, NAMES.v6only, JSON.stringify(r));
        assert.match(String(r.fakeAddress), /^(198\.1[89]\.|2001:2::)/, JSON.stringify(r));
      }
      const a = await dig(NAMES.v6only, 'A');
      const m = new RegExp(`^${NAMES.v6only.replace('.', '\\.')}\\.\\s+1\\s+IN\\s+A\\s+(198\\.1[89]\\.\\d+\\.\\d+)$`, 'm').exec(a);
      assert.ok(m, a);
      fakeIp = m[1]!;
      assert.equal(String(recs.find((r) => r.inbound === 'socks4')?.fakeAddress), fakeIp, JSON.stringify(recs));
    });

    await t.test('the upstream resolver sees no query for the proxied name (also TYPE65) and the DIRECT one', async () => {
      const https = await dig(NAMES.v6only, 'TYPE65');
      assert.match(https, /status: NOERROR/, https);
      assert.match(https, /ANSWER: 0,/, https);
      const direct = await dig(DIRECT_NAME, 'A');
      // dnsmasq knows no test name: its NXDOMAIN passed back untouched
      assert.match(direct, /status: NXDOMAIN/, direct);
      assert.equal(topo.queriesFor('c4', NAMES.v6only), 0);
      // exactly the one query dig made, passed on once
      assert.equal(topo.queriesFor('c4', DIRECT_NAME), 1, 'the DIRECT name is forwarded');
      const s = await fakeStatus(proxy);
      assert.ok(s.fake, 'fake in /api/status');
      assert.ok(s.fake.size[4] >= 1);
      assert.ok(s.fake.forwarded >= 1);
      assert.ok(s.fake.recent.some((r) => r.name === NAMES.v6only && r.address === fakeIp), JSON.stringify(s.fake));
      // the recent destinations show the name, and the fake address the program used
      assert.ok(s.recent.some((r) => r.via === 'socks4' && r.host === NAMES.v6only && r.fakeAddress === fakeIp && r.result === 'ok'), JSON.stringify(s.recent));
    });

    await t.test('restart with --fake-state: an address handed out before still reaches its name', async () => {
      await stop(bridge);
      ({ bridge, proxy } = await startBridge(['--fake-state', fakeState]));
      const r = await curl(['--fail', '--socks4', proxy], `http://${fakeIp}/index.html`);
      assert.equal(r.code, 0, `${r.stderr}\n${bridge.stderr.join('\n')}`);
      assert.equal(r.stdout.toString(), topo.index.s6);
      assert.equal(topo.queriesFor('c4', NAMES.v6only), 0);
    });

    await t.test('restart without --fake-state: the old address is refused on every inbound, never sent on', async () => {
      await stop(bridge);
      ({ bridge, proxy } = await startBridge([]));
      const gwSeen = gw.records().length;
      const url = `http://${fakeIp}/index.html`;
      const s5 = await curl(['--socks5', proxy], url);
      assert.notEqual(s5.code, 0);
      assert.match(s5.stderr, /SOCKS5.*\(4\)/, s5.stderr);
      const s4 = await curl(['--socks4', proxy], url);
      assert.notEqual(s4.code, 0);
      assert.match(s4.stderr, /SOCKS4.*(rejected|failed|91)/i, s4.stderr);
      const http = await curl(['-i', '-x', `http://${proxy}`], url);
      assert.equal(http.code, 0, http.stderr);
      const text = http.stdout.toString();
      assert.match(text, /^HTTP\/1\.1 502 Fake Address Not Mapped\r\n/, text);
      assert.match(text, /not \(or no longer\) mapped/, text);
      assert.match(text, /--fake-state/, text);
      assert.match(text, /\r\nX-Dualsocks-Error: ERR_FAKE_UNMAPPED\r\n/i, text);
      const connect = await curl(['-p', '-x', `http://${proxy}`], url);
      assert.notEqual(connect.code, 0);
      assert.match(connect.stderr, /CONNECT tunnel failed, response 502/, connect.stderr);
      const recs = bridge.records();
      assert.deepEqual(recs.map((r) => r.result), ['ERR_FAKE_UNMAPPED', 'ERR_FAKE_UNMAPPED', 'ERR_FAKE_UNMAPPED', 'ERR_FAKE_UNMAPPED'], JSON.stringify(recs));
      // nothing reached the gateway
      assert.ok(recs.every((r) => r.gateway === undefined), JSON.stringify(recs));
      assert.equal(gw.records().length, gwSeen, JSON.stringify(gw.records().slice(gwSeen)));
    });
  } finally {
    await Promise.all(running.map((r) => r.stop()));
    await topo.destroy();
  }
});
