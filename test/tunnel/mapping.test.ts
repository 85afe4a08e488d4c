/**
 * Completing the configured mapping with the received SERVICE_IDS (behaviour spec 4.5).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { defaultSettings, exitCodeOf, silentLogger, type ProxyOptions, type ServiceTarget } from '../../src/index';
import { completeMapping } from '../../src/tunnel/mapping';

const mapping = suite('completeMapping');

const tcp = (port: number): ServiceTarget => ({ kind: 'tcp', port });

function options(mode: ProxyOptions['mode'], services: Record<string, number>, configDir?: Record<string, number>): ProxyOptions {
  return {
    mode,
    accessToken: 'token',
    endpoint: { host: '127.0.0.1', port: 1 },
    services: new Map(Object.entries(services).map(([k, p]) => [k, tcp(p)])),
    configDirMappings: configDir && new Map(Object.entries(configDir).map(([k, p]) => [k, tcp(p)])),
    settings: defaultSettings(),
    log: silentLogger(),
  };
}

function ports(result: ReturnType<typeof completeMapping>): Record<string, number> | string {
  if (!(result instanceof Map)) return `exit ${exitCodeOf(result)}`;
  return Object.fromEntries([...result].map(([k, t]) => [k, t.kind === 'tcp' ? t.port : -1]));
}

const cases: Array<[string, ProxyOptions, string[] | undefined, Record<string, number> | string]> = [
  ['V1 form and one id: renamed', options('destination', { '': 22 }), ['SSH1'], { SSH1: 22 }],
  ['V1 form and no ids: stays ""', options('source', { '': 5555 }), [], { '': 5555 }],
  ['V1 form and two ids: refused (the service refuses messages without a service id there; the reference keeps going)', options('source', { '': 5555 }), ['A', 'B'], 'exit 3'],
  ['V1 form (destination) and two ids: refused', options('destination', { '': 22 }), ['A', 'B'], 'exit 3'],
  ['-y V1 and two ids: refused (no service id on the wire)', { ...options('source', { A: 1, B: 2 }), clientType: 'V1' }, ['A', 'B'], 'exit 3'],
  ['-y V1, V1 form and two ids: refused', { ...options('destination', { '': 22 }), clientType: 'V1' }, ['A', 'B'], 'exit 3'],
  ['-y V1 and one id: renamed', { ...options('destination', { '': 22 }), clientType: 'V1' }, ['A'], { A: 22 }],
  ['equal sets, order of SERVICE_IDS', options('source', { B: 2, A: 1 }), ['A', 'B'], { A: 1, B: 2 }],
  ['a missing id: refused', options('source', { A: 1 }), ['A', 'B'], 'exit 3'],
  ['an extra id: refused', options('destination', { A: 1, B: 2 }), ['A'], 'exit 3'],
  ['empty mapping, source: config dir then free ports', options('source', {}, { A: 7000 }), ['A', 'B'], { A: 7000, B: 0 }],
  ['empty mapping, destination: config dir', options('destination', {}, { A: 22, Z: 9 }), ['A'], { A: 22 }],
  ['empty mapping, destination, id without mapping: usage error', options('destination', {}, { A: 22 }), ['A', 'B'], 'exit 2'],
  ['1.0 subprotocol: the mapping as given', options('destination', { '': 22 }), undefined, { '': 22 }],
  ['1.0 subprotocol without any mapping: usage error', options('source', {}), undefined, 'exit 2'],
];

for (const [name, opts, ids, expected] of cases) {
  mapping(name, () => {
    assert.equal(ports(completeMapping(opts, ids)), expected);
  });
}

mapping('the refusal names the ids on each side', () => {
  const result = completeMapping(options('source', { SSH1: 1, HTTP1: 2 }), ['SSH1', 'RDP1']);
  assert.not.ok(result instanceof Map);
  if (!(result instanceof Map)) {
    assert.match(result.message, '[SSH1, RDP1]');
    assert.match(result.message, '[SSH1, HTTP1]');
  }
});

mapping('a V1-form mapping against two services names them and shows the mapping to give', () => {
  const result = completeMapping(options('source', { '': 5555 }), ['SSH1', 'HTTP1']);
  assert.not.ok(result instanceof Map);
  if (!(result instanceof Map)) assert.is(result.message, 'The tunnel has several services [SSH1, HTTP1] but -s 5555 names none: give one mapping per service, e.g. -s SSH1=5555,HTTP1=PORT');
});

mapping.run();
