/** `localproxy tunnel open|close|describe|list|rotate`: a client for the management API. */
export async function runTunnelCli(_argv: string[]): Promise<number> {
  process.stderr.write('localproxy tunnel: not implemented yet\n');
  return 1;
}
