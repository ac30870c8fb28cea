#!/usr/bin/env node
// `npx agentsup …` / `node_modules/.bin/agentsup …`: runs the agentsup binary that
// the platform package (an optional dependency, installed only where its `os` and
// `cpu` match, as esbuild and biome ship theirs) carries, with the same arguments,
// stdin/stdout/stderr, and exit status.
//
// Signals. A terminal's Ctrl-C (SIGINT) and Ctrl-\ (SIGQUIT) reach every process
// of the foreground group, agentsup included: this launcher only outlives them,
// since passing them on would be agentsup's second signal, which kills at once.
// SIGTERM and SIGHUP usually come to one pid (docker stop, systemd, `kill`, npm
// passing on its own): those are forwarded, so SIGTERM stops the workers cleanly
// and SIGHUP re-reads the sources. When agentsup dies of a signal, the launcher
// dies of the same one, so the caller sees what it would without the launcher.
//
// AGENTSUP_BINARY=/path/to/agentsup runs that binary instead (a cargo build).
'use strict';

const { spawn } = require('node:child_process');
const { existsSync } = require('node:fs');

const PLATFORMS = {
  'linux x64': '@agentsup/linux-x64',
  'linux arm64': '@agentsup/linux-arm64',
};

function binaryPath() {
  const override = process.env.AGENTSUP_BINARY;
  if (override) {
    if (!existsSync(override)) fail(`AGENTSUP_BINARY=${override}: no such file`);
    return override;
  }
  const platform = `${process.platform} ${process.arch}`;
  const pkg = PLATFORMS[platform];
  if (!pkg) {
    fail(
      `no agentsup binary is published for ${platform} (only ${Object.keys(PLATFORMS).join(', ')}); ` +
        'build one with `cargo install --locked --path .` from the source and set AGENTSUP_BINARY to it',
    );
  }
  try {
    return require.resolve(`${pkg}/bin/agentsup`);
  } catch {
    fail(
      `the package ${pkg}, which carries the binary for ${platform}, is not installed ` +
        '(installed with --omit=optional or --no-optional, or from a lock file made on another platform?); ' +
        `run \`npm install ${pkg}\` next to agentsup, or set AGENTSUP_BINARY to an agentsup binary`,
    );
  }
}

function fail(message) {
  process.stderr.write(`agentsup (npm launcher): ${message}\n`);
  process.exit(1);
}

const child = spawn(binaryPath(), process.argv.slice(2), { stdio: 'inherit' });

const outlive = () => {};
const forward = (signal) => () => {
  if (child.exitCode === null && child.signalCode === null) child.kill(signal);
};
const handlers = {
  SIGINT: outlive,
  SIGQUIT: outlive,
  SIGTERM: forward('SIGTERM'),
  SIGHUP: forward('SIGHUP'),
};
for (const [signal, handler] of Object.entries(handlers)) process.on(signal, handler);

child.on('error', (err) => fail(`cannot run ${child.spawnfile}: ${err.message}`));
child.on('exit', (code, signal) => {
  if (signal) {
    for (const [s, handler] of Object.entries(handlers)) process.off(s, handler);
    process.kill(process.pid, signal);
    return;
  }
  process.exit(code ?? 1);
});
