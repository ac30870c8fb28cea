// An agent worker using the real `openai` npm package.
//
// The client reads OPENAI_API_KEY and OPENAI_BASE_URL from the environment agentsup
// built for this process. Nothing is caught: a rejected key throws the SDK's
// AuthenticationError, Node prints it and exits 1, and agentsup classifies the exit
// as `auth` from that output, re-reads its sources and restarts the worker.
import OpenAI from 'openai';

const client = new OpenAI(); // OPENAI_API_KEY and OPENAI_BASE_URL from the environment
const model = process.env.MODEL ?? 'gpt-4o-mini';
const interval = Number(process.env.CALL_INTERVAL ?? '2') * 1000;

for (let n = 1; ; n++) {
  const reply = await client.chat.completions.create({
    model,
    messages: [{ role: 'user', content: `ping ${n}` }],
  });
  console.log(`node-openai: call ${n} answered ${JSON.stringify(reply.choices[0].message.content)}`);
  await new Promise((resolve) => setTimeout(resolve, interval));
}
