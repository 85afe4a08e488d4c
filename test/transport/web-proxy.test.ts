import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { noProxyFromEnv, parseProxyUrl, proxyFromEnv, shouldBypassProxy, urlDecode } from '../../src/transport/index';

const parse = suite('parseProxyUrl');

// Behaviour spec 5.1 vectors, with our fixes: port 0/absent → 3128, tcp:// refused here
// (the reference parsed it and refused it later with "Unsupported protocol").
const good: Array<[string, string, string, number, string | undefined]> = [
  ['https://server.com:0', 'https', 'server.com', 3128, undefined],
  ['http://user:12345@server.com:90', 'http', 'server.com', 90, 'user:12345'],
  ['http://user:password@server.com:3129', 'http', 'server.com', 3129, 'user:password'],
  ['http://[::1]:8080', 'http', '::1', 8080, undefined],
  ['https://[2001:db8::1]:443', 'https', '2001:db8::1', 443, undefined],
  ['http://[fe80::1]', 'http', 'fe80::1', 3128, undefined],
  ['HTTP://Proxy.Example.COM:8080', 'http', 'proxy.example.com', 8080, undefined],
  ['http://us%40er:p%3Ass+w@proxy:3128', 'http', 'proxy', 3128, 'us@er:p:ss w'],
  ['http://user:F%40o%3Ao%21B%23ar+%24@server.com:109', 'http', 'server.com', 109, 'user:F@o:o!B#ar $'],
  ['http://us:p@ss@server.com:1', 'http', 'server.com', 1, 'us:p@ss'],
  ['http://:ab@server.com:1', 'http', 'server.com', 1, ':ab'],
];

for (const [url, protocol, host, port, auth] of good) {
  parse(`parses ${url}`, () => {
    assert.equal(parseProxyUrl(url), auth === undefined ? { protocol, host, port } : { protocol, host, port, auth });
  });
}

parse('fixes reference bug 5.1: a URL without a scheme is http:// and loses no characters', () => {
  assert.equal(parseProxyUrl('myproxy.local:3128'), { protocol: 'http', host: 'myproxy.local', port: 3128 });
  assert.equal(parseProxyUrl('user:pw@myproxy.local:8080'), { protocol: 'http', host: 'myproxy.local', port: 8080, auth: 'user:pw' });
});

parse('fixes reference bug 5.1: a path or trailing slash is stripped, not part of the host', () => {
  assert.equal(parseProxyUrl('http://proxy/'), { protocol: 'http', host: 'proxy', port: 3128 });
  assert.equal(parseProxyUrl('http://proxy:3128/'), { protocol: 'http', host: 'proxy', port: 3128 });
  assert.equal(parseProxyUrl('http://proxy:8080/some/path?x=1'), { protocol: 'http', host: 'proxy', port: 8080 });
  assert.equal(parseProxyUrl('http://[::1]:8080/'), { protocol: 'http', host: '::1', port: 8080 });
});

parse('port 0 or absent → 3128 with a warning', () => {
  const warnings: string[] = [];
  assert.is(parseProxyUrl('http://proxy', { warn: (m) => warnings.push(m) }).port, 3128);
  assert.is(parseProxyUrl('http://proxy:0', { warn: (m) => warnings.push(m) }).port, 3128);
  assert.is(parseProxyUrl('http://proxy:8080', { warn: (m) => warnings.push(m) }).port, 8080);
  assert.equal(warnings, ['No port was provided for the web proxy, using default: 3128', 'No port was provided for the web proxy, using default: 3128']);
});

const bad: Array<[string, string]> = [
  ['://server.com', 'missing protocol'],
  ['tcp://user:F%40o%3Ao%21B%23ar+%24@server.com:109', 'Unsupported protocol "tcp"'],
  ['socks5://proxy:1080', 'Unsupported protocol'],
  ['tcp://:3128', 'Unsupported protocol'],
  ['http://:3128', 'Missing HTTP host address'],
  ['http://@server.com:3128', 'Empty authentication'],
  ['http://:@server.com:3128', 'missing either username or password'],
  ['http://:1@server.com:3128', 'missing either username or password'],
  ['http://1:@server.com:3128', 'missing either username or password'],
  ['http://user@server.com:3128', 'Missing the colon'],
  ['http://server.com:abs', 'Invalid web proxy port "abs"'],
  ['http://server.com:70000', 'out of range'],
  ['http://server.com:99999', 'out of range'],
  ['http://[::1:8080', "missing closing ']'"],
  ['http://[::1]x', 'Unexpected text'],
  ['http://[zz]:1', 'Invalid IPv6 address'],
  ['http://bad host:1', 'Invalid web proxy host'],
  ['http://u:p%00w@server.com:1', 'null byte'],
];

for (const [url, message] of bad) {
  parse(`rejects ${url}`, () => {
    assert.throws(() => parseProxyUrl(url), (err: Error) => err.message.includes(message) && !err.message.includes('\n'));
  });
}

parse('error messages never contain the password', () => {
  for (const url of ['http://user:s3cret-pw@server.com:abs', 'http://user:s3cret-pw@server.com:99999', 'http://user:s3cret-pw@[::1:1']) {
    assert.throws(() => parseProxyUrl(url), (err: Error) => !err.message.includes('s3cret-pw'));
  }
});

parse.run();

const decode = suite('urlDecode');

decode('decodes the 5.1 vectors', () => {
  assert.is(urlDecode('F%40o%3Ao%21B%23ar+%24'), 'F@o:o!B#ar $');
  assert.is(urlDecode('%40fasdbla'), '@fasdbla');
  assert.is(urlDecode('%24%20%26%20%3C%20%3E%20%3F%20%3B%20%23%20%3A%20%3D%20%2C%20%22%20%27%20~%20%2B%20%25'), '$ & < > ? ; # : = , " \' ~ + %');
  assert.is(urlDecode('%C3%A9t%C3%A9'), 'été');
});

for (const input of ['%%', '%', '%gh', '%h1', '%x2', '121fad%1', '%00', 'abc%00def', '%1g']) {
  decode(`rejects ${input}`, () => {
    assert.throws(() => urlDecode(input));
  });
}

decode.run();

const env = suite('proxyFromEnv / noProxyFromEnv');

env('lower case https_proxy wins, even when empty', () => {
  assert.equal(proxyFromEnv({ https_proxy: 'http://a:1', HTTPS_PROXY: 'http://b:2' }), { variable: 'https_proxy', value: 'http://a:1' });
  assert.equal(proxyFromEnv({ HTTPS_PROXY: 'http://b:2' }), { variable: 'HTTPS_PROXY', value: 'http://b:2' });
  assert.is(proxyFromEnv({ https_proxy: '', HTTPS_PROXY: 'http://b:2' }), undefined);
  assert.is(proxyFromEnv({ HTTPS_PROXY: '  ' }), undefined);
  assert.is(proxyFromEnv({}), undefined);
  assert.is(proxyFromEnv({ http_proxy: 'http://c:3' }), undefined, 'http_proxy is not used for wss://');
});

env('no_proxy wins over NO_PROXY', () => {
  assert.is(noProxyFromEnv({ no_proxy: 'a', NO_PROXY: 'b' }), 'a');
  assert.is(noProxyFromEnv({ no_proxy: '', NO_PROXY: 'b' }), '');
  assert.is(noProxyFromEnv({ NO_PROXY: 'b' }), 'b');
  assert.is(noProxyFromEnv({}), undefined);
});

env.run();

const bypass = suite('shouldBypassProxy');

const bypassCases: Array<[string, string | undefined, number | undefined, boolean]> = [
  ['example.com', undefined, 443, false],
  ['example.com', '', 443, false],
  ['example.com', '*', 443, true],
  ['example.com', 'example.com', 443, true],
  ['EXAMPLE.com', 'example.COM', 443, true],
  ['data.example.com', 'example.com', 443, true],
  ['data.example.com', '.example.com', 443, true],
  ['data.example.com', '*.example.com', 443, true],
  ['badexample.com', 'example.com', 443, false],
  ['example.com', 'other.org, example.com', 443, true],
  ['example.com', 'other.org example.com', 443, true],
  ['example.com', 'example.com:8443', 443, false],
  ['example.com', 'example.com:443', 443, true],
  ['127.0.0.1', '127.0.0.1', 443, true],
  ['127.0.0.1', '127.0.0.0/8', 443, true],
  ['10.1.2.3', '127.0.0.0/8', 443, false],
  ['::1', '::1', 443, true],
  ['::1', '[::1]', 443, true],
  ['[::1]', '::1', 443, true],
  ['::1', '::/0', 443, true],
  ['127.0.0.1', '::/0', 443, false],
  ['localhost', '127.0.0.1', 443, false],
];

for (const [host, noProxy, port, expected] of bypassCases) {
  bypass(`${host}:${port} with NO_PROXY=${JSON.stringify(noProxy)} → ${expected ? 'direct' : 'proxy'}`, () => {
    assert.is(shouldBypassProxy(host, noProxy, port), expected);
  });
}

bypass.run();
