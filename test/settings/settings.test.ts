import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { defaultSettings, exportSettings, mergeSettingsJson, SettingsError } from '../../src/settings';

const s = suite('settings');

function errorOf(text: string): SettingsError {
  try {
    mergeSettingsJson(text);
  } catch (err) {
    assert.instance(err, SettingsError);
    return err as SettingsError;
  }
  throw new Error('no error');
}

s('the export re-read gives the defaults back', () => {
  assert.equal(mergeSettingsJson(exportSettings(defaultSettings())), { settings: defaultSettings(), unknownKeys: [] });
});

s('fixes reference bug 9.5#48: a file without overrides keeps the cn- region endpoints', () => {
  const { settings } = mergeSettingsJson('{"tunneling":{"proxy":{"websocket":{"ping_period_ms":"5000"}}}}');
  assert.is(settings.pingPeriodMs, 5000);
  assert.is(settings.regionEndpointOverrides['cn-north-1'], 'data.tunneling.iot.cn-north-1.amazonaws.com.cn');
});

s('numbers, booleans and strings are accepted; unknown keys are reported', () => {
  const { settings, unknownKeys } = mergeSettingsJson('{"tunneling":{"proxy":{"tcp":{"connection_retry_count":-1,"bogus":1},"websocket":{"reconnect_on_data_error":false}}}}');
  assert.is(settings.tcpConnectionRetryCount, -1);
  assert.is(settings.reconnectOnDataError, false);
  assert.equal(unknownKeys, ['tunneling.proxy.tcp.bogus']);
});

s('a value of the wrong type is an error naming its key (the reference silently used the default)', () => {
  const err = errorOf('{"tunneling":{"proxy":{"websocket":{"ping_period_ms":"5000ms"}}}}');
  assert.is(err.key, 'tunneling.proxy.websocket.ping_period_ms');
  assert.is(errorOf('{"tunneling":{"proxy":{"message":{"data_length_size":4}}}}').key, 'tunneling.proxy.message.data_length_size');
});

s('the reference\'s buffer sizes are accepted and checked, have no effect and are not exported', () => {
  const { settings, unknownKeys } = mergeSettingsJson('{"tunneling":{"proxy":{"tcp":{"read_buffer_size":"4096","write_buffer_size":"4096"},"websocket":{"read_buffer_size":"1","write_buffer_size":"1"},"message":{"data_length_size":"2","data_frame_max_size":"65538"}}}}');
  assert.equal(settings, defaultSettings());
  assert.equal(unknownKeys, []);
  assert.is(errorOf('{"tunneling":{"proxy":{"tcp":{"read_buffer_size":"big"}}}}').key, 'tunneling.proxy.tcp.read_buffer_size');
  const exported = exportSettings(defaultSettings());
  for (const key of ['data_length_size', 'data_frame_max_size', 'read_buffer_size', 'write_buffer_size']) assert.not.match(exported, key);
});

s('a section that is not an object is an error naming it, not silently dropped', () => {
  const err = errorOf('{"tunneling":{"proxy":{"tcp":5}}}');
  assert.is(err.key, 'tunneling.proxy.tcp');
  assert.match(err.message, 'must be an object');
});

s('malformed JSON and a non-object file are errors', () => {
  assert.match(errorOf('{"tunneling":').message, 'not valid JSON');
  assert.match(errorOf('[1,2]').message, 'JSON object');
});

s.run();
