// Node worker: the protocol of soaklib.py, written with fs.writeSync on fd 1 (never
// process.stdout, which would switch the pipe to non-blocking).
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const KEYS = ['SOAK_DIR_TOKEN', 'SOAK_ENV_API_KEY', 'SOAK_CMD_SECRET'];
const FILL = 'abcdefghijklmnopqrstuvwxyz0123456789'.repeat(4);
const LONG_EVERY = 1500, LONG_LEN = 100000;
const names = KEYS.filter((k) => k in process.env);
const token = crypto.randomBytes(6).toString('hex');
const fp = (v) => crypto.createHash('sha256').update(v).digest('hex').slice(0, 12);
const sleeper = new Int32Array(new SharedArrayBuffer(4));
function write(s) {
  let buf = Buffer.from(s);
  while (buf.length) {
    try {
      const n = fs.writeSync(1, buf);
      buf = buf.subarray(n);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
      Atomics.wait(sleeper, 0, 0, 5);
    }
  }
}
function payload(seq) {
  if (names.length && seq % 37 === 5) {
    return 'k=' + process.env[names[Math.floor(seq / 37) % names.length]];
  }
  if (seq % LONG_EVERY === LONG_EVERY - 1) {
    const unit = 'L' + seq.toString(16) + '.';
    return unit.repeat(Math.floor(LONG_LEN / unit.length) + 1).slice(0, LONG_LEN);
  }
  return 'p' + seq.toString(16) + '-' + FILL.slice(0, (seq * 7) % 120);
}
write('H ' + token + ' node ' + names.map((k) => k + '=' + fp(process.env[k])).join(' ') + '\n');
let seq = 0, stop = false;
process.on('SIGTERM', () => { stop = true; });
const rate = parseInt(process.argv[2] || '500', 10);
const batch = Math.max(1, Math.floor(rate / 20));
function tick() {
  if (stop) {
    write('E ' + token + ' ' + (seq - 1) + '\n');
    process.exit(0);
  }
  let out = '';
  for (let i = 0; i < batch; i++, seq++) out += 'S ' + token + ' ' + seq + ' ' + payload(seq) + '\n';
  write(out);
  setTimeout(tick, 50);
}
tick();
