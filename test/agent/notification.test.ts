/** The tunnel notification's wire format: topic, encoding, and what the agent accepts. */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  encodeNotification, isBadNotification, isValidThingName, MAX_NOTIFICATION_BYTES, notificationTopic, parseNotification,
} from '../../src/mqtt/notification';

const test = suite('agent: tunnel notifications');
const TOKEN = 'AQGAAXhEXAMPLETOKEN0123456789abcdefghijklmnop';
const good = { clientAccessToken: TOKEN, clientMode: 'destination', region: 'us-east-1', services: ['SSH'] };
const bytes = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value));

test('topic and payload are the cloud\'s', () => {
  assert.is(notificationTopic('pi1'), '$aws/things/pi1/tunnels/notify');
  assert.equal(JSON.parse(encodeNotification({ clientAccessToken: TOKEN, clientMode: 'destination', region: 'local', services: ['SSH', 'VNC'] })),
    { clientAccessToken: TOKEN, clientMode: 'destination', region: 'local', services: ['SSH', 'VNC'] });
  assert.equal(parseNotification(bytes(good), true), good);
});

test('thing names: 1-128 of a-z A-Z 0-9 : _ -, so no wildcard or level separator reaches a topic', () => {
  for (const name of ['pi1', 'My_Thing:2-b', 'x'.repeat(128)]) assert.ok(isValidThingName(name), name);
  for (const name of ['', 'x'.repeat(129), 'pi/1', 'pi+', '#', 'pi 1', 'pié']) assert.not.ok(isValidThingName(name), name);
});

const BAD: Array<[string, unknown, boolean, string, RegExp]> = [
  ['not JSON', `{"clientAccessToken": ${TOKEN}}`, true, 'not JSON', /^a notification of \d+ bytes is not JSON$/],
  ['a JSON array', [good], true, 'not JSON', /not a JSON object/],
  ['JSON null', 'null', true, 'not JSON', /not a JSON object/],
  ['source mode', { ...good, clientMode: 'source' }, true, 'wrong mode', /^clientMode is "source", not "destination"$/],
  ['no mode', { ...good, clientMode: undefined }, true, 'wrong mode', /clientMode is missing/],
  ['a long mode is cut', { ...good, clientMode: 'd'.repeat(100) }, true, 'wrong mode', /^clientMode is "d{32}…", not/],
  ['no token', { ...good, clientAccessToken: undefined }, true, 'invalid', /clientAccessToken is missing or not a string/],
  ['a numeric token', { ...good, clientAccessToken: 42 }, true, 'invalid', /clientAccessToken is missing or not a string/],
  ['an empty token', { ...good, clientAccessToken: '' }, true, 'invalid', /Access token cannot be empty/],
  ['a token with a newline', { ...good, clientAccessToken: 'AQG\nabc' }, true, 'invalid', /control characters/],
  ['no region', { ...good, region: undefined }, true, 'invalid', /region is missing or empty \(give --proxy-endpoint/],
  ['a region with a control character is escaped', { ...good, region: 'us\u001b[31m' }, true, 'invalid', /^region "us\\u001b\[31m" is not a region name/],
  ['a numeric region', { ...good, region: 7 }, false, 'invalid', /region is not a string/],
  ['no services', { ...good, services: undefined }, true, 'invalid', /services is missing or empty/],
  ['empty services', { ...good, services: [] }, true, 'invalid', /services is missing or empty/],
  ['11 services', { ...good, services: Array.from({ length: 11 }, (_, i) => `S${i}`) }, true, 'invalid', /11 services, more than 10/],
  ['a numeric service', { ...good, services: [22] }, true, 'invalid', /a service id is not a non-empty string/],
  ['a service id with a slash', { ...good, services: ['a/b'] }, true, 'invalid', /^service id "a\/b" is not 1-128 of/],
  ['a service twice', { ...good, services: ['SSH', 'SSH'] }, true, 'invalid', /a service id is listed twice/],
];

test('bad payloads: the kind and one line that never quotes the token', () => {
  for (const [what, payload, regionRequired, kind, reason] of BAD) {
    const result = parseNotification(bytes(payload), regionRequired);
    assert.ok(isBadNotification(result), `${what}: refused`);
    if (!isBadNotification(result)) continue;
    assert.is(result.kind, kind, what);
    assert.match(result.reason, reason, what);
    assert.not.ok(result.reason.includes(TOKEN.slice(0, 8)), `${what}: no token in the reason`);
  }
});

test('without a required region (the agent has -e), a notification without one is accepted', () => {
  assert.equal(parseNotification(bytes({ ...good, region: undefined }), false), { ...good, region: '' });
  assert.equal(parseNotification(bytes({ ...good, region: 'local' }), false), { ...good, region: 'local' });
});

test(`size: ${MAX_NOTIFICATION_BYTES} bytes are read, one more is refused before parsing`, () => {
  const base = JSON.stringify({ ...good, padding: '' });
  const fit = Buffer.from(base.replace('"padding":""', `"padding":"${'x'.repeat(MAX_NOTIFICATION_BYTES - base.length)}"`));
  assert.is(fit.length, MAX_NOTIFICATION_BYTES);
  assert.not.ok(isBadNotification(parseNotification(fit, true)));
  const over = Buffer.concat([fit, Buffer.from(' ')]);
  const result = parseNotification(over, true);
  assert.ok(isBadNotification(result));
  if (isBadNotification(result)) assert.is(result.kind, 'too large');
});

test.run();
