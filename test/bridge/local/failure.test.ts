// describeFailure: the gateway's REP becomes plain words for HTTP clients and survives unchanged
// for SOCKS5 clients.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ERRORS, RequestError, SocksProtocolError, type ErrorCode } from '../../../shared/errors.js';
import { REP, SOCKS4_CD } from '../../../shared/socks5/constants.js';
import { describeFailure } from '../../../bridge/local/failure.js';

const reply = (rep: number): SocksProtocolError => new SocksProtocolError('ERR_SOCKS_REPLY', 'gateway 127.0.0.1:1081: x', { rep });

// RFC 9110 §4: reason-phrase = *( HTAB / SP / VCHAR / obs-text ); we keep to plain words
const REASON = /^[A-Za-z][A-Za-z ]*[a-z]$/;

test("a gateway's REP becomes the matching words, status and SOCKS5 reply", () => {
  const cases: [number, number, RegExp][] = [
    [REP.GENERAL_FAILURE, 502, /^Gateway Failure$/],
    [REP.NOT_ALLOWED, 502, /^Not Allowed By Gateway Policy$/],
    [REP.NETWORK_UNREACHABLE, 502, /^Network Unreachable From Gateway$/],
    [REP.HOST_UNREACHABLE, 502, /^Name Not Found Or Host Unreachable$/],
    [REP.CONNECTION_REFUSED, 502, /^Refused By Destination$/],
    [REP.TTL_EXPIRED, 504, /^Destination Timed Out$/],
    [REP.COMMAND_NOT_SUPPORTED, 502, /Command Not Supported/],
    [REP.ADDRESS_TYPE_NOT_SUPPORTED, 502, /Address Type Not Supported/],
  ];
  for (const [rep, status, reason] of cases) {
    const f = describeFailure(reply(rep));
    assert.equal(f.httpStatus, status, `REP ${rep}`);
    assert.match(f.reason, reason);
    assert.match(f.reason, REASON);
    assert.equal(f.socks5Rep, rep, 'the gateway REP survives');
    assert.equal(f.socks4Code, SOCKS4_CD.REJECTED);
    assert.equal(f.code, 'ERR_SOCKS_REPLY');
    assert.ok(f.text.length > 20 && f.text.endsWith('.'), f.text);
  }
});

test('REP 4 says it also covers an unreachable host', () => {
  const f = describeFailure(reply(REP.HOST_UNREACHABLE));
  assert.match(f.text, /resolve the name/);
  assert.match(f.text, /could not reach the host/);
});

test('an undefined REP is passed on with its number', () => {
  const f = describeFailure(reply(0x2a));
  assert.equal(f.socks5Rep, 0x2a);
  assert.equal(f.httpStatus, 502);
  assert.match(f.text, /0x2a/);
  assert.match(f.reason, REASON);
  // a "succeeded" REP on a failure must not tell a SOCKS client it worked
  assert.equal(describeFailure(reply(0)).socks5Rep, REP.GENERAL_FAILURE);
});

test('no gateway reachable, timeouts and local causes', () => {
  const none = describeFailure(new RequestError('ERR_NO_GATEWAY', 'socks5://127.0.0.1:9: connection refused'));
  assert.deepEqual([none.httpStatus, none.reason, none.code, none.socks5Rep], [502, 'No Gateway Reachable', 'ERR_NO_GATEWAY', REP.GENERAL_FAILURE]);
  assert.match(none.text, /gateway/);

  const timeout = describeFailure(new RequestError('ERR_CONNECT_TIMEOUT', 'x'));
  assert.deepEqual([timeout.httpStatus, timeout.reason, timeout.socks5Rep], [504, 'Destination Timed Out', REP.TTL_EXPIRED]);

  const name = describeFailure(new RequestError('ERR_NAME_NOT_FOUND', 'nowhere.test'));
  assert.deepEqual([name.httpStatus, name.reason, name.code, name.socks5Rep], [502, 'Name Not Found', 'ERR_NAME_NOT_FOUND', REP.HOST_UNREACHABLE]);
  // only the bridge itself says ERR_POLICY_DESTINATION (a gateway's refusal is its REP 0x02)
  const own = describeFailure(new RequestError('ERR_POLICY_DESTINATION', '127.0.0.1: loopback address'));
  assert.deepEqual([own.httpStatus, own.reason, own.socks5Rep, own.socks4Code], [403, 'Not Allowed By Bridge Policy', REP.NOT_ALLOWED, SOCKS4_CD.REJECTED]);
  assert.equal(describeFailure(new RequestError('ERR_CONNECTION_REFUSED')).reason, 'Refused By Destination');
});

test('every error code gets a valid reason phrase, status and REP', () => {
  for (const code of Object.keys(ERRORS) as ErrorCode[]) {
    const f = describeFailure(new RequestError(code));
    assert.match(f.reason, REASON, code);
    assert.ok(f.httpStatus === 502 || f.httpStatus === 504 || (code === 'ERR_POLICY_DESTINATION' && f.httpStatus === 403), code);
    assert.equal(f.code, code);
    assert.equal(f.socks5Rep, ERRORS[code].rep, code);
  }
});

test('errno errors and foreign values do not throw', () => {
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED' });
  assert.equal(describeFailure(refused).code, 'ERR_CONNECTION_REFUSED');
  assert.equal(describeFailure(refused).socks5Rep, REP.CONNECTION_REFUSED);
  for (const v of [new Error('boom'), 'text', undefined, null, 42, {}]) {
    const f = describeFailure(v);
    assert.equal(f.httpStatus, 502);
    assert.equal(f.socks5Rep, REP.GENERAL_FAILURE);
    assert.equal(f.code, 'ERR_CONNECT_FAILED');
    assert.match(f.reason, REASON);
  }
});
