// Runs first inside the single executable (scripts/dist.mjs puts it in front of the bundle).
// A stray NODE_OPTIONS in the user's environment (an IDE's --inspect, --max-old-space-size, a
// --require of a file that is gone) would otherwise change how this "native" tool runs.
// Node 22/24 executables ignore it themselves: their SEA blob says `execArgvExtension: "none"`
// (scripts/sea-blob.mjs), and the blob's execArgv marker below shows that Node read it.
// Older Nodes (the armv7 executable is Node 20.11) do not: there, if NODE_OPTIONS is set, start
// this same executable again without it, pass stdio through, and exit exactly as the child did.
// Returns true when the child owns the run, so the bundle must not start. A --require/--import
// preload still runs in that first process before any of our code; the README says so.
// Plain ES2019 and only built-ins: on Node 20.11 `node:sea` is absent.
(function localproxySeaPrelude() {
  // SEA_EXEC_ARGV of scripts/sea-blob.mjs: present exactly when Node applied the blob's
  // execArgv and execArgvExtension, so NODE_OPTIONS never reached this process.
  if (process.execArgv.indexOf('--stack-trace-limit=10') !== -1) return false;
  if (process.env.LOCALPROXY_SEA_CHILD === '1') {
    // The re-started child: the marker has done its job; keep it out of the application's view.
    delete process.env.LOCALPROXY_SEA_CHILD;
    return false;
  }
  var options = process.env.NODE_OPTIONS;
  if (options === undefined || options.trim() === '') return false;
  var childProcess = require('child_process');
  // An --inspect from NODE_OPTIONS already opened a debugger port in this (parent) process.
  try {
    var inspector = require('inspector');
    if (inspector.url()) inspector.close();
  } catch (err) { /* a Node built without the inspector: nothing to close */ }
  var env = Object.assign({}, process.env);
  delete env.NODE_OPTIONS;
  // Belt and braces against a re-exec loop if a wrapper puts NODE_OPTIONS back.
  env.LOCALPROXY_SEA_CHILD = '1';
  var child = childProcess.spawn(process.execPath, process.argv.slice(2), { stdio: 'inherit', env: env });
  // The child hides a -t/-i token from the process list; this waiting parent must too.
  try { process.title = 'localproxy'; } catch (err) { /* titles are best effort */ }
  // Ctrl-C reaches the whole process group, so the child already gets SIGINT: the parent only
  // has to survive it. SIGTERM and SIGHUP are usually aimed at this pid alone: pass them on.
  function onInterrupt() {}
  function forwardTerm() { child.kill('SIGTERM'); }
  function forwardHup() { child.kill('SIGHUP'); }
  process.on('SIGINT', onInterrupt);
  if (process.platform !== 'win32') {
    process.on('SIGTERM', forwardTerm);
    process.on('SIGHUP', forwardHup);
  }
  child.on('error', function onSpawnError(err) {
    process.stderr.write('localproxy: cannot restart without NODE_OPTIONS: ' + err.message + '\n');
    process.exit(1);
  });
  child.on('exit', function onChildExit(code, signal) {
    process.removeListener('SIGINT', onInterrupt);
    process.removeListener('SIGTERM', forwardTerm);
    process.removeListener('SIGHUP', forwardHup);
    if (signal) process.kill(process.pid, signal);
    else process.exit(code === null ? 1 : code);
  });
  return true;
})()
