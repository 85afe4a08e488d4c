/**
 * Issue 14 with the C++ reference (v3.3.1) as either peer, through our relay over TLS: our proxy
 * announces credit/1 (the relay said it forwards it to us), the reference never declares it, so
 * the relay strips every extension message toward it. At `-v 6` the reference logs the type of
 * every message it receives: none may be an extension's; the relay's log shows it stripped our
 * HELLO. Data flows byte-exact both ways, as without the extension (which stays inactive: the
 * reference never grants, so nothing of ours is limited).
 */
import { execFileSync } from 'node:child_process';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Logger, startRelay } from '../../src/index';
import { ExtensionType } from '../../src/protocol/extension';
import { blastServer, patternSha256, receiveAll, sendPattern, sinkServer, type AppServer, type SinkServer } from '../helpers/apps';
import { caDir, spawnProxy, type ChildProxy } from '../helpers/child';
import { spawnCpp, withLogs, type CppProxy } from '../helpers/cpp';
import { within } from '../helpers/wait';

const MiB = 1024 * 1024;
const interop = suite('e2e: credit/1 and the C++ reference (issue 14)');

/** A line of the reference's trace that names a received message's type (`... message type: 2`). */
const RECEIVED_TYPE = /message type:\s*(\d+)/;

async function scenario(referenceMode: 'source' | 'destination'): Promise<void> {
  const relayLines: string[] = [];
  const relay = await startRelay({ port: 0, tls: 'self-signed', log: new Logger({ level: 5, id: 'relay', sink: (line) => relayLines.push(line) }) });
  const tunnel = await relay.openTunnel({ services: ['SINK', 'DOWN'] });
  const ca = caDir(relay);
  const sink: SinkServer = await sinkServer();
  const down: AppServer = await blastServer(MiB, 12);
  execFileSync('openssl', ['rehash', ca.dir], { stdio: 'ignore' });
  let reference: CppProxy | undefined;
  let ours: ChildProxy | undefined;
  try {
    // The reference first: our HELLO then goes to a present peer (and is stripped on the way).
    reference = await spawnCpp({
      relayPort: relay.port, caDir: ca.dir, mode: referenceMode, verbose: 6,
      accessToken: referenceMode === 'source' ? tunnel.sourceAccessToken : tunnel.destinationAccessToken,
      services: referenceMode === 'source' ? { SINK: 0, DOWN: 0 } : { SINK: sink.port, DOWN: down.port },
    });
    // Every such line, however long the trace (the log keeps only its last lines).
    const typeLines: string[] = [];
    reference.log.on('line', (line: string) => { if (RECEIVED_TYPE.test(line) || /Unrecognized|ignorable/i.test(line)) typeLines.push(line); });
    await within(reference.ready, 15_000, 'the C++ proxy ready');
    ours = await spawnProxy({
      relay, ca, mode: referenceMode === 'source' ? 'destination' : 'source',
      accessToken: referenceMode === 'source' ? tunnel.destinationAccessToken : tunnel.sourceAccessToken,
      services: referenceMode === 'source' ? { SINK: sink.port, DOWN: down.port } : { SINK: 0, DOWN: 0 },
    });
    await ours.ready;
    const cpp = reference;
    const proxy = ours;
    await withLogs([cpp.log, { text: () => proxy.output() }, { text: () => relayLines.join('') }], async () => {
      const ports = referenceMode === 'destination' ? proxy.ports : cpp.ports;
      // One-way transfers ended by the sender's close (see test/interop/pair.ts for why not echoes).
      const up = await within(sendPattern(ports.SINK, MiB, { seed: 11 }), 30_000, `an upload through the C++ ${referenceMode}`);
      const [uploaded] = await within(sink.waitFor(1), 10_000, 'the sink closes');
      assert.is(uploaded.bytes, MiB);
      assert.is(uploaded.sha256, up.sha256, 'upload byte-exact');
      const downloaded = await within(receiveAll(ports.DOWN), 30_000, `a download through the C++ ${referenceMode}`);
      assert.is(downloaded.bytes, MiB);
      assert.is(downloaded.sha256, patternSha256(MiB, 12), 'download byte-exact');
      const types = new Set(typeLines.map((line) => Number(RECEIVED_TYPE.exec(line)?.[1] ?? -1)));
      assert.ok(types.has(2) || types.has(6), `the reference's -v 6 log names the messages it handles (types seen: ${[...types].join(', ')})`);
      for (const type of [ExtensionType.CREDIT_HELLO, ExtensionType.CREDIT_WINDOW]) {
        assert.not.ok(types.has(type), `no message of type ${type} reached the reference`);
      }
      assert.equal(typeLines.filter((line) => /Unrecognized|ignorable/i.test(line)), []);
      const relayLog = relayLines.join('');
      assert.match(relayLog, `not forwarded: CREDIT_HELLO, which the ${referenceMode} did not declare`, 'ours announced the extension; the relay stripped it');
    });
  } finally {
    await ours?.stop();
    await reference?.stop();
    await relay.close();
    ca.remove();
    await sink.close();
    await down.close();
  }
}

interop('the C++ reference as the destination, ours as the source: data byte-exact both ways; no extension message reaches it', async () => {
  await scenario('destination');
});

interop('the C++ reference as the source, ours as the destination: the same', async () => {
  await scenario('source');
});

interop.run();
