/**
 * The broker flags of `localproxy agent` and `localproxy relay`: --mqtt-url, --mqtt-cert,
 * --mqtt-key, --mqtt-ca, --mqtt-client-id, checked the same way for both. No MQTT.js here:
 * the relay's command line imports this module at every start of the program.
 */
import { readFileSync } from 'node:fs';
import { stringOption, type OptionSpec, type RawArgs } from '../cli/args';
import { validatePath } from '../cli/validate';
import { usageError } from '../exit';
import { checkBrokerUrl, type BrokerConfig } from './broker';

export const BROKER_OPTIONS: readonly OptionSpec[] = [
  { name: 'mqtt-url', value: true },
  { name: 'mqtt-cert', value: true },
  { name: 'mqtt-key', value: true },
  { name: 'mqtt-ca', value: true },
  { name: 'mqtt-client-id', value: true },
];

function readText(path: string, what: string): string {
  validatePath(path, what);
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw usageError(`cannot read ${what} '${path}': ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/**
 * The broker to connect to, or undefined without --mqtt-url. `plain`: mqtt:// (the caller warns
 * that tokens cross the network in clear text). Usage errors are thrown as ExitError (exit 2).
 */
export function brokerFromArgs(args: RawArgs, defaultClientId: string): { broker: BrokerConfig; plain: boolean } | undefined {
  const url = stringOption(args, 'mqtt-url');
  const certFile = stringOption(args, 'mqtt-cert');
  const keyFile = stringOption(args, 'mqtt-key');
  const caFile = stringOption(args, 'mqtt-ca');
  const clientId = stringOption(args, 'mqtt-client-id');
  if (url === undefined) {
    const given = BROKER_OPTIONS.find((o) => args.has(o.name));
    if (given) throw usageError(`--${given.name} needs --mqtt-url`);
    return undefined;
  }
  const urlProblem = checkBrokerUrl(url);
  if (urlProblem) throw usageError(urlProblem);
  const plain = new URL(url).protocol === 'mqtt:';
  if ((certFile === undefined) !== (keyFile === undefined)) throw usageError('--mqtt-cert and --mqtt-key must be given together');
  // MQTT.js would quietly switch to TLS; say it instead.
  if (certFile !== undefined && plain) throw usageError('a client certificate needs TLS: use an mqtts:// URL');
  if (clientId === '') throw usageError('--mqtt-client-id cannot be empty');
  const broker: BrokerConfig = { url, clientId: clientId ?? defaultClientId };
  if (certFile !== undefined) broker.cert = readText(certFile, '--mqtt-cert');
  if (keyFile !== undefined) broker.key = readText(keyFile, '--mqtt-key');
  if (caFile !== undefined) broker.ca = readText(caFile, '--mqtt-ca');
  return { broker, plain };
}
