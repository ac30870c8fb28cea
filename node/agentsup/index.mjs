// Worker-side helpers for processes run by agentsup. No dependencies.
//
// exitOnAuthError(): an uncaught credential rejection (the OpenAI, Anthropic,
// LangChain.js clients all throw a class named AuthenticationError on a 401) ends
// the process with status 77 after its stack is printed and stdout/stderr are
// flushed, so agentsup re-reads the secrets and restarts the worker.
// key(name): the current value of a declared key, re-read from
// $AGENTSUP_KEYS_DIR/NAME when agentsup rotates it in place (on_rotation = "file").
// worker(): { name, replica, replicas } or null outside agentsup.
import { closeSync, fstatSync, openSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

export const AUTH_EXIT_CODE = 77;

const AUTH_CLASS_NAMES = new Set(['AuthenticationError', 'UnauthorizedError', 'Unauthenticated']);
const AUTH_MESSAGES = ['Incorrect API key provided', 'invalid x-api-key', 'authentication_error', 'API_KEY_INVALID'];

function* chain(err) {
  const seen = new Set();
  const todo = [err];
  while (todo.length > 0) {
    const current = todo.pop();
    if (current === null || typeof current !== 'object' || seen.has(current)) continue;
    seen.add(current);
    yield current;
    if (current.cause !== undefined) todo.push(current.cause);
    if (Array.isArray(current.errors)) todo.push(...current.errors); // AggregateError
  }
}

function classNames(value) {
  const names = [];
  for (let proto = Object.getPrototypeOf(value); proto !== null; proto = Object.getPrototypeOf(proto)) {
    if (proto.constructor && typeof proto.constructor.name === 'string') names.push(proto.constructor.name);
  }
  return names;
}

/** True when `err` (or its cause chain) is a provider rejecting a credential. 403 and 429 are not. */
export function isAuthError(err) {
  for (const current of chain(err)) {
    if (classNames(current).some((n) => AUTH_CLASS_NAMES.has(n))) return true;
    if (typeof current.name === 'string' && AUTH_CLASS_NAMES.has(current.name)) return true;
    const message = typeof current.message === 'string' ? current.message : '';
    if (current.status === 401 && message !== '') return true;
    if (AUTH_MESSAGES.some((m) => message.includes(m))) return true;
  }
  return false;
}

function exitCode(code) {
  if (Number.isInteger(code)) return code;
  const raw = process.env.AGENTSUP_AUTH_EXIT_CODE ?? '';
  return /^\d+$/.test(raw) ? Number(raw) : AUTH_EXIT_CODE;
}

/** Print the error, flush both streams, and exit with the auth status. */
export function exitNow(err, code) {
  const status = exitCode(code);
  const text = `${err && err.stack ? err.stack : String(err)}\n` +
    `agentsup: credential rejected (${err && err.constructor ? err.constructor.name : 'error'}); ` +
    `exiting with status ${status} so the supervisor re-reads the secrets\n`;
  process.exitCode = status;
  // Writes to pipes are asynchronous in Node: exit only once stderr has taken the
  // text and stdout has drained, or the traceback agentsup classifies is lost.
  process.stderr.write(text, () => {
    process.stdout.write('', () => process.exit(status));
  });
}

let installed = false;

/**
 * Exit with status 77 when a provider rejects the credential.
 *   exitOnAuthError()            // process-wide: uncaught exceptions and rejections
 *   exitOnAuthError(async () => { ...main loop... })   // wraps a function
 */
export function exitOnAuthError(fn, { code } = {}) {
  if (!installed) {
    installed = true;
    const onError = (err) => {
      if (isAuthError(err)) {
        exitNow(err, code);
        return;
      }
      // Keep Node's own behaviour for every other error: print and exit 1.
      process.stderr.write(`${err && err.stack ? err.stack : String(err)}\n`);
      process.exit(1);
    };
    process.on('uncaughtException', onError);
    process.on('unhandledRejection', onError);
  }
  if (typeof fn === 'function') {
    return async (...args) => {
      try {
        return await fn(...args);
      } catch (err) {
        if (isAuthError(err)) {
          exitNow(err, code);
          return new Promise(() => {}); // never settles: the process is exiting
        }
        throw err;
      }
    };
  }
  return undefined;
}

/** { name, replica, replicas } from AGENTSUP_*, or null outside agentsup. */
export function worker() {
  const name = process.env.AGENTSUP_WORKER;
  if (!name) return null;
  const replica = Number(process.env.AGENTSUP_REPLICA ?? '0');
  const replicas = Number(process.env.AGENTSUP_REPLICAS ?? '1');
  if (!Number.isInteger(replica) || !Number.isInteger(replicas)) return null;
  return { name, replica, replicas };
}

const cache = new Map();

/** The current value of a declared key; cheap to call per request. */
export function key(name) {
  const dir = process.env.AGENTSUP_KEYS_DIR;
  if (dir) {
    const path = join(dir, name);
    let st = null;
    try {
      st = statSync(path, { bigint: true });
    } catch (err) {
      if (err.code !== 'ENOENT') throw err;
    }
    if (st !== null) {
      const stamp = `${st.ino}:${st.mtimeNs}:${st.size}`;
      const hit = cache.get(path);
      if (hit && hit.stamp === stamp) return hit.value;
      // The stamp of the file actually read: agentsup may have replaced it
      // between the stat above and this open.
      const fd = openSync(path, 'r');
      try {
        const fst = fstatSync(fd, { bigint: true });
        const value = readFileSync(fd, 'utf8');
        cache.set(path, { stamp: `${fst.ino}:${fst.mtimeNs}:${fst.size}`, value });
        return value;
      } finally {
        closeSync(fd);
      }
    }
  }
  const value = process.env[name];
  if (value === undefined) {
    throw new Error(`${name} is not in this worker's environment${dir ? ' or in $AGENTSUP_KEYS_DIR' : ''}: declare it in the worker's \`keys\` in supervisor.toml`);
  }
  return value;
}
