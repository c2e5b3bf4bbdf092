// Drives a keel server with the official `openai` npm client and prints what it saw as one JSON
// object on stdout; tests/test_server_openai.cpp checks it. Usage: node openai_client.mjs BASE_URL
// (e.g. http://127.0.0.1:8080/v1). Exits 0 unless the client itself could not run.
import OpenAI from 'openai';

const baseURL = process.argv[2];
const client = new OpenAI({ baseURL, apiKey: 'unused', maxRetries: 0, timeout: 120000 });
const out = {};

// What a thrown APIError carries, or the unexpected success.
async function failure(promise) {
  try {
    const r = await promise;
    return { unexpected_success: r };
  } catch (e) {
    return { class: e.constructor.name, status: e.status ?? null, type: e.type ?? null, param: e.param ?? null,
             code: e.code ?? null, message: e.message ?? null, error: e.error ?? null };
  }
}

const models = await client.models.list();
out.models = [];
for await (const m of models) out.models.push({ id: m.id, object: m.object });
const model = out.models[0].id;
const messages = [{ role: 'user', content: 'Tell me a story.' }];

const chat = await client.chat.completions.create({ model, messages, max_completion_tokens: 16, temperature: 0 });
out.chat = { object: chat.object, id: chat.id, model: chat.model, content: chat.choices[0].message.content,
             role: chat.choices[0].message.role, finish_reason: chat.choices[0].finish_reason, usage: chat.usage };

const stream = await client.chat.completions.create({ model, messages, max_tokens: 16, temperature: 0, stream: true,
                                                      stream_options: { include_usage: true } });
out.chat_stream = { content: '', chunks: 0, finish_reason: null, usage: null, roles: [] };
for await (const chunk of stream) {
  out.chat_stream.chunks++;
  if (chunk.usage) out.chat_stream.usage = chunk.usage;
  for (const c of chunk.choices) {
    if (c.delta.role) out.chat_stream.roles.push(c.delta.role);
    if (c.delta.content) out.chat_stream.content += c.delta.content;
    if (c.finish_reason) out.chat_stream.finish_reason = c.finish_reason;
  }
}

const logprobs = await client.chat.completions.create({ model, messages, max_tokens: 6, temperature: 0, logprobs: true,
                                                        top_logprobs: 2 });
out.chat_logprobs = logprobs.choices[0].logprobs;

const completion = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 24, temperature: 0 });
out.completion = { object: completion.object, text: completion.choices[0].text,
                   finish_reason: completion.choices[0].finish_reason, usage: completion.usage };

const cstream = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 24, temperature: 0,
                                                  stream: true });
out.completion_stream = { text: '', finish_reason: null };
for await (const chunk of cstream) {
  for (const c of chunk.choices) {
    out.completion_stream.text += c.text;
    if (c.finish_reason) out.completion_stream.finish_reason = c.finish_reason;
  }
}

out.bad_model = await failure(client.chat.completions.create({ model: 'no-such-model', messages, max_tokens: 4 }));
out.too_long = await failure(client.completions.create({ model, prompt: 'Once upon a time '.repeat(200), max_tokens: 4 }));
out.bad_type = await failure(client.chat.completions.create({ model, messages, max_tokens: 4, temperature: 'hot' }));

process.stdout.write(JSON.stringify(out) + '\n');
