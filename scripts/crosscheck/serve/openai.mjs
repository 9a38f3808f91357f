// Cross-check of `fusemap serve` with the official OpenAI SDK (npm `openai`), not part of
// `make test`: lists the models, asks a plain and a streamed completion with the same seed
// (their texts must agree), an image as a data: URI, a stop sequence, and checks that a bad
// request and a wrong key come back as the SDK's typed errors.
//
//   cd scripts/crosscheck/serve && npm install
//   node openai.mjs http://127.0.0.1:8080/v1 [API_KEY] [IMAGE.png]
import OpenAI from "openai";
import { readFileSync } from "node:fs";

const [baseURL = "http://127.0.0.1:8080/v1", apiKey = "none", imagePath] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
let failures = 0;
const check = (ok, what) => {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures++;
};

const models = await client.models.list();
const model = models.data[0]?.id;
check(typeof model === "string", `models.list: ${model}`);

const messages = [{ role: "user", content: "Tell me something about the sea." }];
const plain = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0.8, seed: 5 });
const text = plain.choices[0].message.content;
check(plain.object === "chat.completion" && typeof text === "string", `completion: ${JSON.stringify(text)}`);
check(plain.usage.total_tokens === plain.usage.prompt_tokens + plain.usage.completion_tokens, "usage adds up");

let streamed = "", finish = null, usage = null;
const stream = await client.chat.completions.create({
  model, messages, max_tokens: 24, temperature: 0.8, seed: 5, stream: true, stream_options: { include_usage: true },
});
for await (const chunk of stream) {
  streamed += chunk.choices[0]?.delta?.content ?? "";
  finish = chunk.choices[0]?.finish_reason ?? finish;
  usage = chunk.usage ?? usage;
}
check(streamed === text, `stream text equals the plain answer (${JSON.stringify(streamed)})`);
check(finish === plain.choices[0].finish_reason, `stream finish_reason ${finish}`);
check(usage?.completion_tokens === plain.usage.completion_tokens, "stream usage");

if (text.length > 6) {
  const stop = text.slice(3, 6);
  const cut = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0.8, seed: 5, stop: [stop] });
  check(cut.choices[0].message.content === text.slice(0, text.indexOf(stop)) && cut.choices[0].finish_reason === "stop",
        `stop ${JSON.stringify(stop)} -> ${JSON.stringify(cut.choices[0].message.content)}`);
}

if (imagePath) {
  const url = `data:image/png;base64,${readFileSync(imagePath).toString("base64")}`;
  const img = await client.chat.completions.create({
    model, max_tokens: 8,
    messages: [{ role: "user", content: [{ type: "image_url", image_url: { url } }, { type: "text", text: "What is it?" }] }],
  });
  check(img.usage.prompt_tokens > 20, `image prompt of ${img.usage.prompt_tokens} tokens: ${JSON.stringify(img.choices[0].message.content)}`);
}

try {
  await client.chat.completions.create({ model, messages: [{ role: "wizard", content: "hi" }] });
  check(false, "an unknown role is refused");
} catch (e) {
  check(e instanceof OpenAI.BadRequestError && e.code === "invalid_role", `unknown role: ${e.status} ${e.code}`);
}
if (apiKey !== "none") {
  const wrong = new OpenAI({ baseURL, apiKey: apiKey + "x", maxRetries: 0 });
  try {
    await wrong.models.list();
    check(false, "a wrong key is refused");
  } catch (e) {
    check(e instanceof OpenAI.AuthenticationError, `wrong key: ${e.status} ${e.code}`);
  }
}
console.log(failures ? `${failures} failed` : "all passed");
process.exit(failures ? 1 : 0);
