// The official `openai` npm client against kvllm serve (tests/test_serve.sh
// copies this beside its node_modules and runs it): a streamed chat
// completion with usage, and a non-streamed completion. Prints one JSON
// line with what it saw; exits non-zero when the client throws.
// usage: node serve_openai_client.mjs PORT MODEL
import OpenAI from 'openai';

const [port, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'none', maxRetries: 0 });

const stream = await client.chat.completions.create({
  model,
  messages: [{ role: 'system', content: 'You tell stories.' }, { role: 'user', content: 'Tell me a story.' }],
  max_tokens: 24,
  temperature: 0,
  stream: true,
  stream_options: { include_usage: true },
});
let text = '', chunks = 0, finish = null, usage = null, role = null;
for await (const chunk of stream) {
  chunks++;
  if (chunk.usage) usage = chunk.usage;
  for (const c of chunk.choices) {
    if (c.delta.role) role = c.delta.role;
    if (c.delta.content) text += c.delta.content;
    if (c.finish_reason) finish = c.finish_reason;
  }
}
const done = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 12, temperature: 0 });
console.log(JSON.stringify({ text, chunks, finish, usage, role, completion: done.choices[0].text,
  completion_finish: done.choices[0].finish_reason, completion_usage: done.usage }));
