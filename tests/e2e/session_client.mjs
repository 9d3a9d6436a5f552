// One chat request with the official `openai` SDK, for spec/plugins/ai-context (session memory):
//   node tests/e2e/session_client.mjs BASE_URL API_KEY SESSION_ID STREAM(0|1) QUESTION
// Prints {"text": answer} on stdout; an error prints {"error": message, "status": n} and exits 1.
import OpenAI from 'openai';

const [base, key, session, stream, question] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base, apiKey: key, maxRetries: 0, timeout: 10000,
  defaultHeaders: session ? { 'X-Session-Id': session } : {} });
const messages = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: question }];
try {
  let text = '';
  if (stream === '1') {
    const s = await client.chat.completions.create({ model: 'gpt-4o-mini', messages, stream: true });
    for await (const chunk of s) text += chunk.choices[0]?.delta?.content ?? '';
  } else {
    const r = await client.chat.completions.create({ model: 'gpt-4o-mini', messages });
    text = r.choices[0].message.content;
  }
  process.stdout.write(JSON.stringify({ text }) + '\n');
} catch (e) {
  process.stdout.write(JSON.stringify({ error: String(e.message), status: e.status ?? null }) + '\n');
  process.exit(1);
}
