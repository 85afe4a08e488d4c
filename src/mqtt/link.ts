/**
 * One connection to an MQTT broker (AWS IoT Core or any MQTT 3.1.1 broker), kept up for the
 * life of the program. MQTT.js does the protocol; this module adds what a device service needs
 * around it: reconnects with exponential backoff and full jitter, the subscriptions checked on
 * every connect, one-line logs, and no packet dump (MQTT.js's debug output would print
 * payloads, which carry access tokens).
 *
 * MQTT.js reconnects only at a fixed period, so its own reconnect is off (`reconnectPeriod: 0`)
 * and each backoff delay ends with `client.reconnect()`, given the stores the client was made
 * with, so that messages waiting to be sent are sent on the new connection.
 *
 * Used by `localproxy agent` (subscribe) and by the relay's notifier (publish).
 */
import { connect, Store, type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { LogLevel, type Logger } from '../log';
import { Backoff } from '../transport/retry';
import { brokerAddress, describeBrokerUrl, type BrokerOptions } from './broker';

/** First reconnect within 1 s, then doubling up to a minute (full jitter, so a fleet does not reconnect in step). */
export const BROKER_RETRY_BASE_MS = 1000;
export const BROKER_RETRY_MAX_MS = 60_000;
/** PINGREQ interval: a broker that vanished without a FIN is noticed within 1.5 of these. */
const KEEPALIVE_S = 30;
const CONNECT_TIMEOUT_MS = 30_000;
/** How long `close()` waits for unacknowledged QoS 1 messages before dropping the connection. */
const CLOSE_FLUSH_MS = 2000;

export interface BrokerHooks {
  /** Topics (QoS 1) subscribed after every connect; the grant is checked each time. */
  subscribe?: string[];
  /** Called after every connect, once the subscriptions were granted (at once without any). */
  onReady?: () => void;
  /**
   * A message; they come one at a time. A QoS 1 message is acknowledged to the broker once the
   * returned promise settles, so the broker delivers it again if this process dies before.
   */
  onMessage?: (topic: string, payload: Buffer) => void | Promise<void>;
}

export interface BrokerLink {
  /** QoS 1; resolves once the broker acknowledged it. Queued while disconnected and sent after the reconnect. */
  publish(topic: string, payload: string): Promise<void>;
  /** Disconnects after the unacknowledged messages were sent (bounded) and stops reconnecting. */
  close(): Promise<void>;
}

function errorText(err: Error): string {
  const code = (err as NodeJS.ErrnoException).code;
  return code && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
}

/** MQTT.js reports a SUBACK with a failure code (0x80 and up) as an error that carries the SUBACK. */
function isRefusal(err: Error | null | undefined): boolean {
  const granted = (err as { packet?: { granted?: unknown } } | null | undefined)?.packet?.granted;
  return Array.isArray(granted) && granted.some((code) => typeof code === 'number' && code >= 0x80);
}

/**
 * What a failure before the TLS handshake completed says about the port: a plain MQTT port
 * answers a ClientHello with MQTT bytes or by closing the connection.
 */
function notTlsHint(err: Error): string | undefined {
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (/WRONG_VERSION_NUMBER|PACKET_LENGTH_TOO_LONG|UNKNOWN_PROTOCOL|RECORD_LAYER_FAILURE/.test(code) || code === 'EPROTO') {
    return 'the port does not speak TLS (a plain MQTT port needs mqtt://; the TLS port is usually 8883)';
  }
  if (code === 'ECONNRESET' || code === 'EPIPE') {
    return 'closed before the TLS handshake: the port does not seem to speak TLS (a plain MQTT port needs mqtt://; the TLS port is usually 8883)';
  }
  return undefined;
}

class Link implements BrokerLink {
  private readonly log: Logger;
  private readonly where: string;
  private readonly tls: boolean;
  private readonly backoff = new Backoff(BROKER_RETRY_BASE_MS, BROKER_RETRY_MAX_MS);
  private readonly stores = { incomingStore: new Store(), outgoingStore: new Store() };
  private readonly client: MqttClient;
  private closing = false;
  private wasConnected = false;
  /** Whether this attempt's TLS handshake completed (a failure before it has its own hint). */
  private tlsUp = false;
  /** MQTT.js reports a TLS connection's socket error twice (TLS layer and stream); one line is enough. */
  private attemptError: string | undefined;
  private retryTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: BrokerOptions, private readonly hooks: BrokerHooks) {
    this.log = options.log;
    this.where = describeBrokerUrl(options.url);
    const { tls, host, port } = brokerAddress(options.url);
    this.tls = tls;
    // Host and port, not the URL: MQTT.js would parse a URL with url.parse(), which Node 24 warns about on stderr.
    const clientOptions: IClientOptions = {
      protocol: tls ? 'mqtts' : 'mqtt',
      host,
      port,
      clientId: options.clientId,
      protocolVersion: 4,
      clean: !options.persistentSession,
      keepalive: KEEPALIVE_S,
      connectTimeout: CONNECT_TIMEOUT_MS,
      reconnectPeriod: 0,
      // Subscriptions are renewed in onConnect, once per connect, where their grant is checked.
      resubscribe: false,
      rejectUnauthorized: true,
      manualConnect: true,
      ...this.stores,
      // Replaces MQTT.js's debug logger, whose packet dumps would include the tokens.
      log: () => {},
    };
    if (options.cert !== undefined) clientOptions.cert = options.cert;
    if (options.key !== undefined) clientOptions.key = options.key;
    if (options.ca !== undefined) clientOptions.ca = options.ca;
    this.client = connect(clientOptions);
    this.client.handleMessage = (packet, done) => this.handleMessage(packet, done);
    this.client.on('connect', this.onConnect);
    this.client.on('close', this.onClose);
    this.client.on('error', this.onError);
    this.client.connect();
    this.watchTls();
  }

  private watchTls(): void {
    this.tlsUp = false;
    if (this.tls) this.client.stream.once('secureConnect', () => { this.tlsUp = true; });
  }

  private readonly onConnect = (): void => {
    this.wasConnected = true;
    this.log.info(`connected to ${this.where} as ${this.options.clientId}`);
    const topics = this.hooks.subscribe ?? [];
    if (topics.length === 0) return this.ready();
    this.client.subscribe(topics, { qos: 1 }, (err) => this.onSubscribed(topics, err ?? undefined));
  };

  private onSubscribed(topics: string[], err: Error | undefined): void {
    if (this.closing) return;
    if (isRefusal(err)) {
      // A connection that hears nothing is of no use: start over, so a fixed policy is picked up.
      this.log.limited(LogLevel.ERROR, 'broker subscription refused', `the broker refused the subscription to ${topics.join(', ')} (does the policy of ${this.options.clientId} allow it?); reconnecting`);
      this.wasConnected = false;
      this.client.stream.destroy();
      return;
    }
    if (err) {
      // The connection went away meanwhile; the reconnect subscribes again.
      this.log.warn(`subscribing to ${topics.join(', ')} failed: ${err.message}`);
      return;
    }
    this.log.info(`subscribed to ${topics.join(', ')}`);
    this.ready();
  }

  /** The backoff starts over only once the connection is useful, so a refused subscription keeps backing off. */
  private ready(): void {
    this.backoff.reset();
    this.hooks.onReady?.();
  }

  private readonly onClose = (): void => {
    if (this.closing || this.retryTimer) return;
    const delay = this.backoff.next();
    if (this.wasConnected) this.log.warn(`connection to ${this.where} lost; reconnecting in ${delay} ms`);
    else this.log.limited(LogLevel.DEBUG, 'broker retry', `next attempt to connect to ${this.where} in ${delay} ms`);
    this.wasConnected = false;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.attemptError = undefined;
      this.client.reconnect(this.stores);
      this.watchTls();
    }, delay);
  };

  private readonly onError = (err: Error): void => {
    if (this.closing) return;
    const hint = this.tls && !this.tlsUp ? notTlsHint(err) : undefined;
    const text = hint ? `${errorText(err)}: ${hint}` : errorText(err);
    if (text === this.attemptError) return;
    this.attemptError = text;
    // Every failed attempt says why; with the backoff that is at most one line a minute in the long run.
    this.log.limited(LogLevel.WARNING, 'broker error', `cannot connect to ${this.where} as ${this.options.clientId}: ${text}`);
  };

  private handleMessage(packet: IPublishPacket, done: (err?: Error) => void): void {
    // Not acknowledged while closing: a persistent session gets the message again on its next connect.
    if (this.closing) return;
    const handled = this.hooks.onMessage?.(packet.topic, packet.payload as Buffer);
    if (!handled) return done();
    handled.then(() => done(), (err: unknown) => {
      this.log.error(`handling a message on ${packet.topic} failed: ${(err as Error)?.message ?? String(err)}`);
      done();
    });
  }

  publish(topic: string, payload: string): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.client.publish(topic, payload, { qos: 1 }, (err) => (err ? reject(err) : resolve()));
    });
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearTimeout(this.retryTimer);
    // Connected: DISCONNECT once the unacknowledged messages are acknowledged, bounded;
    // offline: drop the pending attempt at once.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.client.stream?.destroy();
        resolve();
      }, CLOSE_FLUSH_MS);
      this.client.end(!this.client.connected, {}, () => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.client.off('connect', this.onConnect);
    this.client.off('close', this.onClose);
    // 'error' stays handled: a late socket error after close must not become an uncaught exception.
  }
}

/** Connects now and keeps the connection up until `close()`. */
export function connectBroker(options: BrokerOptions, hooks: BrokerHooks = {}): BrokerLink {
  return new Link(options, hooks);
}
