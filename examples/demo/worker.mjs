// A demo agent worker for Node (no packages: global fetch). A rejected key throws an
// AuthenticationError, uncaught, so Node prints it and exits 1, as the openai SDK does.
class AuthenticationError extends Error {
  constructor(message) {
    super(message);
    this.name = 'AuthenticationError';
  }
}

const base = (process.env.OPENAI_BASE_URL ?? 'https://api.openai.com/v1').replace(/\/$/, '');
const key = process.env.OPENAI_API_KEY;
const interval = Number(process.env.CALL_INTERVAL ?? '2') * 1000;

async function ask(question) {
  const res = await fetch(`${base}/chat/completions`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: process.env.MODEL ?? 'gpt-4o-mini', messages: [{ role: 'user', content: question }] }),
  });
  const body = await res.json();
  if (res.status === 401) throw new AuthenticationError(`401 ${body.error.message}`);
  if (!res.ok) throw new Error(`${res.status} ${JSON.stringify(body)}`);
  return body.choices[0].message.content;
}

console.log(`node worker ${process.env.AGENTSUP_WORKER}.${process.env.AGENTSUP_REPLICA} starting`);
// Calls the provider answered; a refused connection is not one.
for (let n = 0; ; ) {
  let answer;
  try {
    answer = await ask(`ping ${n + 1}`);
  } catch (e) {
    if (e.name !== 'TypeError') throw e; // fetch failed: the provider is not up yet
    console.log('provider not reachable yet; retrying');
    await new Promise((r) => setTimeout(r, 1000));
    continue;
  }
  n += 1;
  console.log(`call ${n}: provider answered ${JSON.stringify(answer)}`);
  await new Promise((r) => setTimeout(r, interval));
}
