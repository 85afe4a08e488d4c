/**
 * What a connection to an MQTT broker is given, and its URL checked and shown. No MQTT.js here:
 * the command lines of the agent and of the relay import this at every start of the program.
 */
import type { Logger } from '../log';

export interface BrokerOptions {
  /** `mqtts://host[:8883]` or `mqtt://host[:1883]`. */
  url: string;
  clientId: string;
  /** PEM client certificate (chain) and key, for brokers that authenticate with X.509 (AWS IoT Core). */
  cert?: string;
  key?: string;
  /** PEM CA certificates that replace the system store for the broker's certificate. */
  ca?: string;
  /**
   * Keep the session on the broker across connections (MQTT 3.1.1 clean session off): its
   * subscriptions stay, and QoS 1 messages sent while this client was away are delivered on
   * its return. Needs a client id that stays the same across restarts.
   */
  persistentSession?: boolean;
  log: Logger;
}

/** The broker options a command line gives; the caller adds its logger. */
export type BrokerConfig = Omit<BrokerOptions, 'log'>;

export const MQTTS_PORT = 8883;
export const MQTT_PORT = 1883;

/** A usage problem with the URL, as one line. */
export function checkBrokerUrl(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return `invalid MQTT URL '${text}': expected mqtts://HOST[:PORT]`;
  }
  if (url.protocol !== 'mqtts:' && url.protocol !== 'mqtt:') return `invalid MQTT URL '${url.protocol}//…': the scheme must be mqtts:// (or mqtt:// without TLS)`;
  if (url.hostname === '') return `invalid MQTT URL '${text}': no host`;
  if (url.username !== '' || url.password !== '') return 'invalid MQTT URL: user names and passwords are not supported in it; authenticate with a client certificate';
  if ((url.pathname !== '' && url.pathname !== '/') || url.search !== '' || url.hash !== '') return `invalid MQTT URL '${text}': it takes no path or query`;
  return undefined;
}

/** Scheme, host and port of a URL that passed `checkBrokerUrl`. */
export function brokerAddress(text: string): { tls: boolean; host: string; port: number } {
  const url = new URL(text);
  const tls = url.protocol === 'mqtts:';
  return { tls, host: url.hostname.replace(/^\[(.*)\]$/, '$1'), port: Number(url.port || (tls ? MQTTS_PORT : MQTT_PORT)) };
}

/** How the URL is shown in logs (it carries no secret: `checkBrokerUrl` refuses credentials). */
export function describeBrokerUrl(text: string): string {
  const url = new URL(text);
  const { tls, port } = brokerAddress(text);
  return `${tls ? 'mqtts' : 'mqtt'}://${url.hostname}:${port}`;
}
