import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { silentLogger } from '../../src/log';
import { MessageType } from '../../src/protocol/message';
import { startRelay } from '../../src/relay/server';
import { connectReady, type TestPeer } from './peer';

const { DATA, STREAM_START } = MessageType;
const many = suite('relay: many tunnels');

many('100 tunnels with connected peers exchange data at once, each stream intact and separate', async () => {
  const relay = await startRelay({ port: 0, tls: 'self-signed', log: silentLogger() });
  const peers: TestPeer[] = [];
  try {
    const TUNNELS = 100;
    const MESSAGES = 32; // 32 x 8 KiB each way per tunnel
    const tunnels = await Promise.all(Array.from({ length: TUNNELS }, async (_, i) => {
      const t = await relay.openTunnel({ services: [`svc${i}`] });
      const src = await connectReady(relay, t.sourceAccessToken);
      const dst = await connectReady(relay, t.destinationAccessToken, { mode: 'destination' });
      peers.push(src, dst);
      return { i, src, dst, service: `svc${i}` };
    }));
    await Promise.all(tunnels.map(async ({ i, src, dst, service }) => {
      src.send({ type: STREAM_START, streamId: 1, serviceId: service, connectionId: 1 });
      for (let k = 0; k < MESSAGES; k++) {
        const payload = Buffer.alloc(8192, (i + k) & 0xff);
        src.send({ type: DATA, streamId: 1, serviceId: service, connectionId: 1, payload });
        dst.send({ type: DATA, streamId: 1, serviceId: service, connectionId: 1, payload });
      }
      await dst.until(() => dst.messages.length === MESSAGES + 1, 60000, `tunnel ${i} destination data`);
      await src.until(() => src.messages.length === MESSAGES, 60000, `tunnel ${i} source data`);
      assert.is(dst.messages[0].type, STREAM_START);
      for (const [k, m] of dst.messages.slice(1).entries()) {
        assert.is(m.serviceId, service);
        assert.is(m.payload[0], (i + k) & 0xff);
      }
      for (const [k, m] of src.messages.entries()) assert.is(m.payload[8191], (i + k) & 0xff);
    }));
  } finally {
    for (const p of peers) p.terminate();
    await relay.close();
  }
});

many.run();
