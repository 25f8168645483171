// Drives agentd's ui-chat route with the AI SDK's own client (the transport useChat uses,
// and its stream reader), and prints what the client made of the stream as JSON.
// Usage: node check.mjs send <api> <key> <chatId> <messages.json>
//        node check.mjs continue <api> <key> <chatId> <messages.json>   (the answer goes on in the last message,
//                                                                          as useChat does after approval responses)
//        node check.mjs resume <api> <key> <chatId>
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [mode, api, key, chatId, messagesJson] = process.argv.slice(2);
const transport = new DefaultChatTransport({ api, headers: { Authorization: `Bearer ${key}` } });

async function send(continuing) {
  const chunks = [], errors = [];
  const stream = await transport.sendMessages({
    chatId, messages: JSON.parse(messagesJson), trigger: "submit-message",
    messageId: undefined, abortSignal: undefined,
  });
  const [forChunks, forMessages] = stream.tee();
  const collecting = (async () => { for await (const chunk of forChunks) chunks.push(chunk); })();
  let message = null;
  const messages = JSON.parse(messagesJson);
  for await (const snapshot of readUIMessageStream({
    message: continuing ? messages[messages.length - 1] : undefined,
    stream: forMessages, onError: (error) => errors.push(String(error && error.message || error)),
  })) message = snapshot;
  await collecting;
  return { chunks, message, errors };
}

async function resume() {
  const stream = await transport.reconnectToStream({ chatId });
  return { resumed: stream !== null };
}

try {
  const result = mode === "resume" ? await resume() : await send(mode === "continue");
  process.stdout.write(JSON.stringify(result));
} catch (error) {
  process.stdout.write(JSON.stringify({ error: String(error && error.message || error) }));
  process.exitCode = 1;
}
