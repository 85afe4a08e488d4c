/** `localproxy --help`: every option from the table in args.ts, the subcommands and the exit codes. */
import { PRODUCT, VERSION } from '../version';
import { OPTIONS } from './args';

export function helpText(): string {
  const rows = OPTIONS.map((o) => {
    const names = `${o.short ? `-${o.short}, ` : '    '}--${o.name}${o.arg ? ` ${o.arg}` : ''}`;
    return `  ${names}\n        ${o.description}\n        e.g. ${o.example}`;
  });
  return `${PRODUCT} ${VERSION}: AWS IoT Secure Tunneling local proxy

Usage:
  localproxy [options]            run the local proxy (source or destination mode)
  localproxy relay [options]      run a self-hosted tunneling service (see: localproxy relay --help)
  localproxy tunnel COMMAND ...   open, list, describe, rotate or close tunnels (see: localproxy tunnel --help)
  localproxy agent [options]      run on a device: start the destination for tunnels notified over MQTT (see: localproxy agent --help)
  localproxy connect THING SERVICE
                                  open a tunnel to a thing, wait for its agent, carry stdin/stdout (ssh's ProxyCommand)
                                  or a port, close the tunnel (see: localproxy connect --help)

Examples:
  AWSIOT_TUNNEL_ACCESS_TOKEN=... localproxy -r us-east-1 -s 5555
  AWSIOT_TUNNEL_ACCESS_TOKEN=... localproxy -r us-east-1 -d SSH1=22,HTTP1=10.0.0.5:80
  ssh -o ProxyCommand='localproxy -r us-east-1 -s SSH=stdio' pi@device    (the token in the environment)
  ssh -o ProxyCommand='localproxy connect %h SSH' pi@pi1

Options (long options may be abbreviated when unambiguous; --name=value also works):
${rows.join('\n')}

Environment:
  AWSIOT_TUNNEL_ACCESS_TOKEN, AWSIOT_TUNNEL_CLIENT_TOKEN, AWSIOT_TUNNEL_ENDPOINT, AWSIOT_TUNNEL_REGION
        used when the option is not given on the command line or in --config
  https_proxy (else HTTPS_PROXY), no_proxy (else NO_PROXY)
        HTTP CONNECT proxy for the service connection, e.g. http://user:pass@proxy:3128

Exit codes:
  0  normal stop: SIGTERM/SIGINT, tunnel closed by the service, --help, --version, --export-default-settings
  1  runtime failure: connect retries exhausted, cannot listen, internal error
  2  usage or configuration error: bad option or value, missing token, unreadable file
  3  refused: the service rejected the connection (HTTP 4xx) or the service ids do not match
`;
}
