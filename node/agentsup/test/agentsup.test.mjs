// Tests of the Node helper with the real `openai` package (from
// examples/node-openai/node_modules, installed by tests/setup-deps.sh) against a
// loopback fake provider. Each scenario runs in a child process: what is under
// test is how that process ends.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, renameSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { isAuthError, key, worker } from '../index.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const helper = pathToFileURL(resolve(here, '..', 'index.mjs')).href;
const openaiEntry = pathToFileURL(
  resolve(here, '..', '..', '..', 'examples', 'node-openai', 'node_modules', 'openai', 'index.mjs'),
).href;
const REJECTED = 'sk-proj-NodeRejected0NodeRejected0NodeRejected0xy';

function fakeProvider(status) {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const body = status === 401
        ? { error: { message: 'Incorrect API key provided: sk-p****. You can find your API key at https://platform.openai.com/account/api-keys.', type: 'invalid_request_error', param: null, code: 'invalid_api_key' } }
        : { error: { message: 'Rate limit reached', type: 'requests', code: 'rate_limit_exceeded' } };
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    });
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server)));
}

function runChild(source, baseURL) {
  return new Promise((ok) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', source], {
      env: { PATH: process.env.PATH, OPENAI_API_KEY: REJECTED, OPENAI_BASE_URL: baseURL },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('close', (code) => ok({ code, out, err }));
  });
}

const call = `
import OpenAI from '${openaiEntry}';
import { exitOnAuthError } from '${helper}';
const call = () => new OpenAI({ maxRetries: 0 }).chat.completions.create({
  model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'ping' }] });
`;

test('an unhandled AuthenticationError exits 77 with its stack printed', async () => {
  const server = await fakeProvider(401);
  const base = `http://127.0.0.1:${server.address().port}/v1`;
  const r = await runChild(`${call}\nexitOnAuthError();\nsetTimeout(() => {}, 60000);\ncall();\n`, base);
  server.close();
  assert.equal(r.code, 77, r.err);
  assert.match(r.err, /AuthenticationError/);
  assert.match(r.err, /exiting with status 77/);
  assert.ok(!r.err.includes(REJECTED));
});

test('a wrapped main loop exits 77 even if nothing else is installed', async () => {
  const server = await fakeProvider(401);
  const base = `http://127.0.0.1:${server.address().port}/v1`;
  const r = await runChild(`${call}\nconst main = exitOnAuthError(async () => { await call(); });\nawait main();\nconsole.log('kept running');\n`, base);
  server.close();
  assert.equal(r.code, 77, r.err);
  assert.ok(!r.out.includes('kept running'));
});

test('a rate limit is not an auth failure', async () => {
  const server = await fakeProvider(429);
  const base = `http://127.0.0.1:${server.address().port}/v1`;
  const r = await runChild(`${call}\nexitOnAuthError();\ncall();\n`, base);
  server.close();
  assert.equal(r.code, 1, r.err);
  assert.match(r.err, /429 Rate limit reached/);
});

test('recognition by class name and cause chain', () => {
  class AuthenticationError extends Error {}
  assert.ok(isAuthError(new Error('step failed', { cause: new AuthenticationError('401') })));
  assert.ok(!isAuthError(new Error('401 in a message is not enough')));
  assert.ok(!isAuthError(Object.assign(new Error('forbidden'), { status: 403 })));
});

test('key() re-reads a replaced key file; worker() reads AGENTSUP_*', () => {
  const dir = mkdtempSync(join(tmpdir(), 'agentsup-keys-'));
  process.env.AGENTSUP_KEYS_DIR = dir;
  const path = join(dir, 'ROTATING_KEY');
  writeFileSync(path, 'first-value');
  assert.equal(key('ROTATING_KEY'), 'first-value');
  writeFileSync(`${path}.new`, 'second-value');
  renameSync(`${path}.new`, path);
  assert.equal(key('ROTATING_KEY'), 'second-value');
  unlinkSync(path);
  assert.throws(() => key('ROTATING_KEY'), /declare it/);
  delete process.env.AGENTSUP_KEYS_DIR;
  delete process.env.AGENTSUP_WORKER;
  assert.equal(worker(), null);
  Object.assign(process.env, { AGENTSUP_WORKER: 'planner', AGENTSUP_REPLICA: '1', AGENTSUP_REPLICAS: '3' });
  assert.deepEqual(worker(), { name: 'planner', replica: 1, replicas: 3 });
});
