/**
 * argv + `--config` file + environment + settings file → one validated ProxyOptions.
 * The order of checks follows the reference's process_cli (behaviour spec 1.4) so the
 * same error wins, with the deviations of the Decisions (exit 2, env overridden, …).
 */
import { writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { ExitCode, ExitError } from '../exit';
import { Logger, LogLevel, type LogSink } from '../log';
import type { Mode, ProxyOptions, ServiceTarget, WebProxy } from '../options';
import { MAX_PRINTED_PATH_CHARS, printable } from '../printable';
import { defaultSettings, exportSettings, mergeSettingsJson, SettingsError, type Settings } from '../settings';
import { caPathProblem, warnCaProblems } from '../transport/ca';
import { deriveClientToken } from '../transport/client-token';
import { noProxyFromEnv, parseProxyUrl, proxyFromEnv, shouldBypassProxy } from '../transport/web-proxy';
import { PRODUCT, VERSION } from '../version';
import { parseArgs, shownValue, usageError, type RawArgs } from './args';
import { readConfigFile } from './config-file';
import { checkConfigDir, defaultConfigDir, readConfigDir } from './config-dir';
import { parseEndpoint, regionEndpoint } from './endpoint';
import { fileProblem, readSmallTextFile } from './read-file';
import { helpText } from './help';
import { checkListenPorts, formatTarget, parseMappings } from './service-spec';
import { validateAccessToken, validateBindAddress, validateClientToken, validateEndpoint, validatePath, validateRegion } from './validate';

export interface CliContext {
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Path of the executable (or script), for the `config/` directory beside it. */
  executable: string;
  stdout: (text: string) => void;
  /** Where error messages go. */
  stderr: (text: string) => void;
  /** Where log lines go; default stderr. */
  logSink?: LogSink;
}

export type CliPlan =
  | { action: 'exit'; exitCode: number }
  /**
   * `secretInArgv`: an access or client token was given on the command line (hide it from `ps`).
   * `stdio`: `-s` names stdio, one connection over stdin/stdout (ssh's ProxyCommand).
   */
  | { action: 'run'; options: ProxyOptions; tokenFromArgv: boolean; secretInArgv: boolean; stdio: boolean };

const ENV_OPTIONS: ReadonlyArray<[string, string]> = [
  ['AWSIOT_TUNNEL_ACCESS_TOKEN', 'access-token'],
  ['AWSIOT_TUNNEL_CLIENT_TOKEN', 'client-token'],
  ['AWSIOT_TUNNEL_ENDPOINT', 'proxy-endpoint'],
  ['AWSIOT_TUNNEL_REGION', 'region'],
];

const K_BANNER = [
  '**********************************************************************',
  '* SECURITY WARNING: SSL host verification is DISABLED (-k flag)     *',
  '* This removes critical security checks and exposes the connection  *',
  '* to potential man-in-the-middle attacks. DO NOT use in production! *',
  '**********************************************************************',
];

function str(args: RawArgs, name: string): string | undefined {
  const v = args.get(name);
  return typeof v === 'string' ? v : undefined;
}

function parseVerbose(text: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) > 65535) throw usageError(`the argument ('${shownValue(text)}') for option '--verbose' is invalid`);
  return Math.min(Number(text), LogLevel.TRACE);
}

/**
 * `-s` carries one connection over stdin/stdout. Decided before anything is logged: that run's
 * stderr is the terminal of an ssh prompt, so by default it shows nothing but fatal lines.
 */
function namesStdio(list: string | undefined): boolean {
  if (list === undefined) return false;
  try {
    return [...parseMappings(list, 'source').services.values()].some((target) => target.kind === 'stdio');
  } catch {
    // The error is reported where the mappings are read.
    return false;
  }
}

function parseMode(text: string): Mode {
  if (text === 'src' || text === 'source') return 'source';
  if (text === 'dst' || text === 'destination') return 'destination';
  throw usageError('Mode value is wrong! Allowed values are: src, dst, source, destination');
}

/**
 * `--settings-json FILE` over the defaults (shared with `localproxy agent`). `path` as given on
 * the command line (relative to `cwd`) is read; messages show it as given.
 */
export function readSettings(path: string, cwd: string, log: Logger): Settings {
  validatePath(path, '--settings-json');
  let text: string;
  try {
    text = readSmallTextFile(resolve(cwd, path));
  } catch (err) {
    throw usageError(`can not read settings file '${path}': ${fileProblem(err)}`);
  }
  let merged: ReturnType<typeof mergeSettingsJson>;
  try {
    // Windows editors may start the file with a byte order mark, which JSON.parse refuses.
    merged = mergeSettingsJson(text.replace(/^\uFEFF/, ''));
  } catch (err) {
    if (err instanceof SettingsError) throw usageError(`${path}: ${err.message}`);
    throw err;
  }
  // Only a file that is used is announced: a broken one gets its error line alone.
  log.info(`Using settings specified in file: ${printable(path, MAX_PRINTED_PATH_CHARS)}`);
  for (const key of merged.unknownKeys) log.debug(`Ignoring unknown setting ${printable(key)} in ${printable(path, MAX_PRINTED_PATH_CHARS)}`);
  return merged.settings;
}

/**
 * Decisions 9: region and endpoint are one choice. The highest source that names either
 * (command line, then `--config`, then the environment) decides it, replacing the lower
 * ones' region *and* endpoint: `-e` on the command line wins over a `--config` file's
 * `region`. Both in the same source still conflict, as in the reference.
 */
function pickRegionOrEndpoint(cli: RawArgs, config: RawArgs, env: NodeJS.ProcessEnv): { region?: string; endpoint?: string } {
  const sources = [
    { region: str(cli, 'region'), endpoint: str(cli, 'proxy-endpoint') },
    { region: str(config, 'region'), endpoint: str(config, 'proxy-endpoint') },
    { region: env.AWSIOT_TUNNEL_REGION, endpoint: env.AWSIOT_TUNNEL_ENDPOINT },
  ];
  const chosen = sources.find((s) => s.region !== undefined || s.endpoint !== undefined);
  if (chosen === undefined || (chosen.region !== undefined && chosen.endpoint !== undefined)) {
    throw usageError('Must specify one and only one of --region/-r or --proxy-endpoint/-e options');
  }
  return chosen;
}

export function buildProxyOptions(argv: readonly string[], ctx: CliContext): CliPlan {
  const cli = parseArgs(argv);
  if (cli.has('version')) {
    ctx.stdout(`${PRODUCT} ${VERSION}\n`);
    return { action: 'exit', exitCode: ExitCode.OK };
  }
  if (cli.has('help')) {
    ctx.stdout(helpText());
    return { action: 'exit', exitCode: ExitCode.OK };
  }
  const exportPath = str(cli, 'export-default-settings');
  if (exportPath !== undefined) {
    validatePath(exportPath, '--export-default-settings');
    try {
      writeFileSync(resolve(ctx.cwd, exportPath), exportSettings(defaultSettings()));
    } catch (err) {
      // Writing, ENOENT means the directory the file would go in is missing.
      const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'its directory does not exist' : fileProblem(err);
      throw new ExitError(ExitCode.USAGE, `${exportPath}: cannot open file: ${why}`);
    }
    return { action: 'exit', exitCode: ExitCode.OK };
  }

  // Command line first, then the --config file fills what is still unset (1.5).
  const merged: RawArgs = new Map(cli);
  const configPath = str(cli, 'config');
  let config: RawArgs = new Map();
  if (configPath !== undefined) {
    validatePath(configPath, '--config');
    config = readConfigFile(configPath, ctx.cwd);
    for (const [key, value] of config) if (!merged.has(key)) merged.set(key, value);
  }

  // Unlike the reference, `verbose` from the --config file works (9.5#49).
  const verbose = str(merged, 'verbose');
  const stdio = namesStdio(str(merged, 'source-listen-port'));
  const log = new Logger({ level: verbose !== undefined ? parseVerbose(verbose) : stdio ? LogLevel.FATAL : LogLevel.INFO, sink: ctx.logSink });

  const tokenFromArgv = cli.has('access-token');
  for (const [variable, option] of ENV_OPTIONS) {
    const value = ctx.env[variable];
    if (value !== undefined && !merged.has(option) && option !== 'region' && option !== 'proxy-endpoint') merged.set(option, value);
  }

  const settingsPath = str(merged, 'settings-json');
  const settings = settingsPath === undefined ? defaultSettings() : readSettings(settingsPath, ctx.cwd, log);

  const accessToken = str(merged, 'access-token');
  if (accessToken === undefined) throw usageError("the option '--access-token' is required but missing: set AWSIOT_TUNNEL_ACCESS_TOKEN (or give -t TOKEN)");
  log.redact(accessToken);
  const { region, endpoint } = pickRegionOrEndpoint(cli, config, ctx.env);

  if (tokenFromArgv) log.warn('Found access token supplied via CLI arg. Consider using environment variable AWSIOT_TUNNEL_ACCESS_TOKEN instead');
  validateAccessToken(accessToken);
  let clientToken = str(merged, 'client-token');
  if (clientToken !== undefined) log.redact(clientToken);
  if (clientToken === '') {
    log.trace('Client token is empty, one is derived from the access token');
    clientToken = undefined;
  }
  if (clientToken !== undefined) validateClientToken(clientToken);
  else log.redact(deriveClientToken(accessToken));

  if (region !== undefined) validateRegion(region);
  if (endpoint !== undefined) validateEndpoint(endpoint);
  const service = parseEndpoint(endpoint ?? regionEndpoint(region as string, settings));

  let webProxy: WebProxy | undefined;
  const proxyEnv = proxyFromEnv(ctx.env);
  if (proxyEnv) {
    try {
      webProxy = parseProxyUrl(proxyEnv.value, { warn: (m) => log.warn(m) });
    } catch (err) {
      throw usageError(`Failed to parse the value of environment variable ${proxyEnv.variable}: ${log.scrub((err as Error).message)}`);
    }
  }
  const noProxy = noProxyFromEnv(ctx.env);
  if (webProxy && shouldBypassProxy(service.host, noProxy, service.port)) {
    log.info(`Found Web proxy information in the environment variables, but ${service.host} is listed in ${ctx.env.no_proxy !== undefined ? 'no_proxy' : 'NO_PROXY'}: connecting directly.`);
  } else if (webProxy) {
    log.info('Found Web proxy information in the environment variables, will use it to connect via the proxy.');
  }

  const sourceList = str(merged, 'source-listen-port');
  const destinationList = str(merged, 'destination-app');
  const modeText = str(merged, 'mode');
  let mode: Mode = destinationList !== undefined ? 'destination' : 'source';
  if (modeText !== undefined) mode = parseMode(modeText);

  let clientType: 'V1' | 'V2' | undefined;
  const clientTypeText = str(merged, 'destination-client-type');
  if (clientTypeText === 'V1' || clientTypeText === 'V2') {
    clientType = clientTypeText;
    log.info(`setting source protocol to ${clientType}`);
  } else if (clientTypeText !== undefined) {
    log.warn('unknown value for destination-client-type, assuming default protocol V3.');
  }

  if (sourceList !== undefined && destinationList !== undefined) throw usageError('Must specify one and only one of --source-listen-port/-s or --destination-app/-d');
  if (sourceList === undefined && destinationList === undefined && modeText === undefined) throw usageError('Must specify one of --source-listen-port/-s or --destination-app/-d or --mode');
  if (sourceList !== undefined && mode === 'destination') throw usageError('-s and --mode have mismatched mode. Mode is set to destination!');
  if (destinationList !== undefined && mode === 'source') throw usageError('-d and --mode have mismatched mode. Mode is set to source!');

  let services = new Map<string, ServiceTarget>();
  const list = destinationList ?? sourceList;
  if (list !== undefined) {
    const parsed = parseMappings(list, mode);
    services = parsed.services;
    for (const warning of parsed.warnings) log.warn(warning);
    if (mode === 'source') checkListenPorts(services, '-s');
    if (services.has('')) log.debug('v2 local proxy starts with v1 local proxy format');
    else {
      log.debug(`Detect port mapping configuration provided through CLI in ${mode} mode:`);
      for (const [id, target] of services) log.debug(`${id} = ${formatTarget(target)}`);
    }
  }

  // The explicit --config-dir is always checked; the default one is read only when the
  // mappings must come from it, so an unrelated ./config next to `-s 5555` is left alone.
  let configDirMappings: Map<string, ServiceTarget> | undefined;
  const configDirArg = str(merged, 'config-dir');
  let configDir: string | undefined;
  if (configDirArg !== undefined) {
    validatePath(configDirArg, '--config-dir');
    configDir = resolve(ctx.cwd, configDirArg);
    checkConfigDir(configDir);
  } else if (services.size === 0) {
    configDir = defaultConfigDir(ctx.cwd, ctx.executable);
    if (configDir === undefined) log.debug(`${resolve(ctx.cwd, 'config')} does not exist or is empty; no configuration files`);
  }
  if (configDir !== undefined) {
    const result = readConfigDir(configDir, mode);
    log.info('Detect configuration files: ');
    for (const file of result.files) log.info(printable(file, MAX_PRINTED_PATH_CHARS));
    for (const warning of result.warnings) log.warn(warning);
    configDirMappings = result.mappings;
    if (mode === 'source') checkListenPorts(result.mappings, configDir);
    for (const [id, target] of result.mappings) log.debug(`${id} = ${formatTarget(target)} (configuration files)`);
  }

  let bindAddress = str(merged, 'local-bind-address');
  if (bindAddress !== undefined) bindAddress = validateBindAddress(bindAddress) || undefined;
  let caPath = str(merged, 'capath');
  if (caPath !== undefined) {
    validatePath(caPath, '--capath');
    caPath = resolve(ctx.cwd, caPath);
    // A warning, not an error: the reference accepts any path here and the seed README's
    // example (`capath = /opt/rootca`) must keep working where that directory is absent.
    // Said once: the connect attempts do not repeat it.
    const problem = caPathProblem(caPath);
    if (problem) warnCaProblems(log, [problem]);
  }
  if (mode === 'source' && services.size === 0 && (configDirMappings?.size ?? 0) === 0) {
    log.debug('Source mode without mappings: every service id gets a free port');
  }
  const insecure = merged.has('no-ssl-host-verify');
  if (insecure) for (const line of K_BANNER) log.warn(line);

  const shownHost = service.host.includes(':') ? `[${service.host}]` : service.host;
  log.debug(`Service endpoint: ${shownHost}:${service.port}, ${mode} mode`);

  const options: ProxyOptions = {
    mode,
    accessToken,
    endpoint: service,
    services,
    settings,
    log,
  };
  if (clientToken !== undefined) options.clientToken = clientToken;
  if (configDirMappings) options.configDirMappings = configDirMappings;
  if (bindAddress !== undefined) options.bindAddress = bindAddress;
  if (caPath !== undefined) options.caPath = caPath;
  if (insecure) options.insecure = true;
  if (clientType) options.clientType = clientType;
  if (webProxy) options.webProxy = webProxy;
  if (noProxy !== undefined) options.noProxy = noProxy;
  return { action: 'run', options, tokenFromArgv, secretInArgv: tokenFromArgv || cli.has('client-token'), stdio };
}
